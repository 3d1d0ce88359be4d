"""The UCI "Online Retail" e-commerce transactions (Chen et al. 2012; UCI ML repository id 352) as CSV.

CSV only: the UCI download is an ``.xlsx`` workbook; export it to CSV first (``.csv`` or ``.csv.gz``).
Header and a sample line::

    InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
    536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom

The "Online Retail II" names (``Invoice``, ``Price``, ``Customer ID``) are accepted as aliases.  Columns
are found by header name; a header without the needed columns raises
:class:`raypipe.data.schema.DataValidationError` naming the file.

Canonical mapping (one domain, ``"online_retail"`` by default)
    * every kept invoice line is an interaction: ``user_id`` = ``CustomerID`` (a trailing ``.0`` from
      spreadsheet exports is removed), ``item_id`` = ``"<domain>/<StockCode>"``, ``timestamp`` =
      ``InvoiceDate`` read as ``m/d/Y H:M`` (also ``m/d/Y H:M:S``, ``Y-m-d H:M[:S]``) **as UTC** — the
      source has no zone (it is UK local time) — ``rating`` and ``review`` null.  ``Quantity`` is not kept.
    * one item per ``StockCode`` among kept lines: ``title`` = its first non-empty ``Description``,
      ``price`` = its first positive ``UnitPrice``.  Item rows are reported under
      ``"<file>#items"`` with the line of the first kept invoice line of that stock code.
    * rejected lines, each with a reason — the first problem found, checked in this order: wrong number
      of columns (``row``); empty ``CustomerID`` (guest checkout); cancelled invoice (``InvoiceNo``
      starting with ``C``); ``Quantity`` not a number or ``<= 0``; unparseable ``InvoiceDate``;
      unparseable ``UnitPrice``.  Non-product stock codes (``POST``, ``M``, ``DOT``, …) are kept as items.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from raypipe.data.formats.common import (
    ROW,
    Conversion,
    ReadResult,
    Rejected,
    Role,
    clean_text,
    convert,
    dataset_info,
    parse_datetime,
    parse_number,
    parsed,
    require_file,
    split_csv_line,
)
from raypipe.data.schema import DataValidationError

log = logging.getLogger(__name__)

PROVENANCE = ("Online Retail (Chen, Sain & Guo 2012), UCI Machine Learning Repository, "
              "https://archive.ics.uci.edu/dataset/352/online+retail")
LICENCE = "UCI Online Retail is distributed under CC BY 4.0 (attribute the source)."

DATE_FORMATS = ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")

# canonical role of a column -> accepted header names (Online Retail, Online Retail II)
COLUMNS: dict[str, tuple[str, ...]] = {
    "invoice": ("InvoiceNo", "Invoice"),
    "stock": ("StockCode",),
    "description": ("Description",),
    "quantity": ("Quantity",),
    "date": ("InvoiceDate",),
    "price": ("UnitPrice", "Price"),
    "customer": ("CustomerID", "Customer ID"),
}


def _header_index(path: Path, line: int, header: list[str]) -> dict[str, int]:
    names = [h.strip() for h in header]
    idx: dict[str, int] = {}
    missing = []
    for role, aliases in COLUMNS.items():
        found = next((names.index(a) for a in aliases if a in names), None)
        if found is None:
            missing.append("/".join(aliases))
        else:
            idx[role] = found
    if missing:
        raise DataValidationError(f"{path}:{line}: header {names} lacks column(s) {missing}; "
                                  f"is this the UCI Online Retail CSV?")
    return idx


def _customer(value: str) -> str | None:
    s = value.strip()
    return re.sub(r"\.0+$", "", s) if re.fullmatch(r"\d+\.0+", s) else (s or None)


def _purchase(text: str, header: list[str], ix: dict[str, int]) -> tuple[str, str, int, float, str | None]:
    """One invoice line as ``(customer, stock code, timestamp, unit price, description)``; raises
    :class:`Rejected` naming the field that makes it unusable (guest, cancelled, returned, unparsable)."""
    try:
        c = split_csv_line(text)
    except Exception as e:  # csv.Error
        raise Rejected(ROW, f"not a CSV line: {e}") from e
    if len(c) != len(header):
        raise Rejected(ROW, f"expected {len(header)} comma-separated columns, got {len(c)}")
    user = _customer(c[ix["customer"]])
    if user is None:
        raise Rejected("CustomerID", "empty (a guest purchase cannot be attributed to a user)")
    invoice = c[ix["invoice"]].strip()
    if invoice.upper().startswith("C"):
        raise Rejected("InvoiceNo", f"cancelled invoice {invoice!r}")
    qty = parsed("Quantity", parse_number, c[ix["quantity"]], "Quantity")
    if qty <= 0:
        raise Rejected("Quantity", f"not a purchase: quantity {c[ix['quantity']].strip()} <= 0")
    ts = parsed("InvoiceDate", parse_datetime, c[ix["date"]], DATE_FORMATS, "InvoiceDate")
    price = parsed("UnitPrice", parse_number, c[ix["price"]], "UnitPrice")
    return user, c[ix["stock"]].strip(), ts, price, clean_text(c[ix["description"]])


def read_online_retail(csv_path: str | Path, out_dir: str | Path, *, domain: str = "online_retail",
                       role: Role = "target", name: str | None = None, encoding: str = "utf-8",
                       max_bad_fraction: float = 0.5) -> ReadResult:
    """Convert the Online Retail CSV (``.csv`` or ``.csv.gz``; not ``.xlsx``) into a one-domain dataset.

    ``encoding`` is that of the CSV export (``"latin-1"`` for some).  Raises :class:`FileNotFoundError`
    for a missing file and :class:`DataValidationError` for a wrong header or a mostly-rejected file.
    """
    path = require_file(csv_path, "Online Retail CSV")
    if path.name.endswith((".xlsx", ".xls")):
        raise ValueError(f"{path}: only CSV is read; export the workbook to CSV first")
    info = dataset_info(name or domain, "uci-online-retail", [(domain, role)], PROVENANCE, LICENCE,
                        {"files": {domain: str(path)}})

    def body(conv: Conversion) -> None:
        rep = conv.report(path)
        lines = conv.lines(rep, path, encoding)
        try:
            hline, htext = next(lines)
        except StopIteration:
            raise DataValidationError(f"{path}: empty file") from None
        header = split_csv_line(htext)
        ix = _header_index(path, hline, header)
        # stock code -> [title, price, first kept line]
        items: dict[str, list[Any]] = {}
        for line, text in lines:
            with conv.rejecting(rep, line):
                user, stock, ts, price, desc = _purchase(text, header, ix)
                if not conv.add_interaction(rep, line, domain=domain, user_id=user, raw_item_id=stock, timestamp=ts):
                    continue
                entry = items.get(stock)
                if entry is None:
                    items[stock] = [desc, price if price > 0 else None, line]
                else:
                    if entry[0] is None and desc is not None:
                        entry[0] = desc
                    if entry[1] is None and price > 0:
                        entry[1] = price
        item_rep = conv.report(f"{path}#items") if items else None
        for stock, (title, price, line) in items.items():
            assert item_rep is not None
            conv.add_item(item_rep, line, domain=domain, raw_item_id=stock, title=title, price=price)

    return convert(out_dir, info, body, fmt="online_retail", max_bad_fraction=max_bad_fraction)
