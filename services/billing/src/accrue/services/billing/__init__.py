"""The billing service: unbilled work, billing runs, invoices and billing exceptions."""
