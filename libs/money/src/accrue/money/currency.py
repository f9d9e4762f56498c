"""ISO 4217 currency codes and their minor units."""

from __future__ import annotations

# Active ISO 4217 codes (list one, 2024 edition) with two minor units unless listed below.
# Funds codes and precious metals are left out: nobody invoices consulting in XAU.
_TWO_DECIMALS = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD
    CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD
    GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD
    MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP
    PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS
    TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD XCG YER ZAR ZMW ZWG
    """.split()
)
_ZERO_DECIMALS = frozenset(
    """
    BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF
    """.split()
)
_THREE_DECIMALS = frozenset(
    """
    BHD IQD JOD KWD LYD OMR TND
    """.split()
)
_FOUR_DECIMALS = frozenset(
    """
    CLF UYW
    """.split()
)

_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS, 2),
    **dict.fromkeys(_ZERO_DECIMALS, 0),
    **dict.fromkeys(_THREE_DECIMALS, 3),
    **dict.fromkeys(_FOUR_DECIMALS, 4),
}


def is_currency(code: str) -> bool:
    """True when code is an active ISO 4217 currency code."""
    return code in _MINOR_UNITS


def minor_units(code: str) -> int:
    """Digits after the decimal point for the currency (EUR 2, JPY 0, KWD 3)."""
    try:
        return _MINOR_UNITS[code]
    except KeyError:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code") from None
