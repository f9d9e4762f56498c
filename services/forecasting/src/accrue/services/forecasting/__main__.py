"""python -m accrue.services.forecasting [serve|migrate]"""

from accrue.runtime.main import run_service
from accrue.services.forecasting.bootstrap import bootstrap, migrate
from accrue.services.forecasting.settings import ForecastingSettings


def main() -> None:
    """Start the forecasting service (or migrate its schema)."""
    run_service("forecasting", ForecastingSettings, bootstrap, migrate)


if __name__ == "__main__":
    main()
