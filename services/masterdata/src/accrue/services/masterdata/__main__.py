"""python -m accrue.services.masterdata [serve|migrate]"""

from accrue.runtime.main import run_service
from accrue.services.masterdata.bootstrap import bootstrap, migrate
from accrue.services.masterdata.settings import MasterDataSettings


def main() -> None:
    """Start the master data service (or migrate its schema)."""
    run_service("masterdata", MasterDataSettings, bootstrap, migrate)


if __name__ == "__main__":
    main()
