"""python -m accrue.services.billing [serve|migrate]"""

from accrue.runtime.main import run_service
from accrue.services.billing.bootstrap import bootstrap, migrate
from accrue.services.billing.settings import BillingSettings


def main() -> None:
    """Start the billing service (or migrate its schema)."""
    run_service("billing", BillingSettings, bootstrap, migrate)


if __name__ == "__main__":
    main()
