"""python -m accrue.services.observability [serve|migrate]"""

from accrue.runtime.main import run_service
from accrue.services.observability.bootstrap import bootstrap, migrate
from accrue.services.observability.settings import ObservabilitySettings


def main() -> None:
    """Start the observability service (or migrate its schema)."""
    run_service("observability", ObservabilitySettings, bootstrap, migrate)


if __name__ == "__main__":
    main()
