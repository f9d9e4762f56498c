"""Set up a throwaway Tryton database for the billing tests (run by conftest in a subprocess).

usage: python tryton_setup.py <trytond.conf> <database>

On a database where account_invoice is activated: a company (GBP) with the minimal chart of
accounts, fiscal years 2025-2027 with invoice sequences and periods, EUR with a rate, and the
tax billing's test contracts use (VAT-STD, 20 %), named like our tax code.
"""

import datetime as dt
import sys
from decimal import Decimal

from proteus import Model
from proteus import config as proteus_config


def main() -> None:
    config_file, database = sys.argv[1], sys.argv[2]
    proteus_config.set_trytond(database=database, config_file=config_file)
    from trytond.modules.account.tests.tools import create_chart, create_fiscalyear, get_accounts
    from trytond.modules.account_invoice.tests.tools import set_fiscalyear_invoice_sequences
    from trytond.modules.company.tests.tools import create_company, get_company

    currency_model = Model.get("currency.currency")

    def currency(code: str, name: str, symbol: str) -> object:
        found = currency_model.find([("code", "=", code)])
        if found:
            return found[0]
        made = currency_model(name=name, code=code, symbol=symbol, rounding=Decimal("0.01"), digits=2)
        made.save()
        return made

    gbp = currency("GBP", "Pound Sterling", "£")
    eur = currency("EUR", "Euro", "€")
    rate = Model.get("currency.currency.rate")(currency=eur, date=dt.date(2020, 1, 1), rate=Decimal("1.15"))
    rate.save()
    party = Model.get("party.party")(name="Acme UK")
    party.save()
    create_company(party=party, currency=gbp)
    company = get_company()
    create_chart(company)
    for year in (2025, 2026, 2027):
        fiscal_year = set_fiscalyear_invoice_sequences(
            create_fiscalyear(company, today=(dt.date(year, 1, 1), dt.date(year, 12, 31)))
        )
        fiscal_year.name = str(year)
        fiscal_year.save()
        fiscal_year.click("create_period")
    accounts = get_accounts(company)
    tax = Model.get("account.tax")(
        name="VAT-STD",
        description="VAT 20 %",
        type="percentage",
        rate=Decimal("0.20"),
        invoice_account=accounts["tax"],
        credit_note_account=accounts["tax"],
    )
    tax.save()
    print("tryton ready", company.id, flush=True)


if __name__ == "__main__":
    main()
