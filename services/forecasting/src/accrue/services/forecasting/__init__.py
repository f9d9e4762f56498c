"""The forecasting service: a revenue and capacity forecast kept current from events."""
