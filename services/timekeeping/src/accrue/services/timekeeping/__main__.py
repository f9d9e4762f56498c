"""python -m accrue.services.timekeeping [serve|migrate]"""

from accrue.runtime.main import run_service
from accrue.services.timekeeping.bootstrap import bootstrap, migrate
from accrue.services.timekeeping.settings import TimekeepingSettings


def main() -> None:
    """Start the timekeeping service (or migrate its schema)."""
    run_service("timekeeping", TimekeepingSettings, bootstrap, migrate)


if __name__ == "__main__":
    main()
