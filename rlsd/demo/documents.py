"""JSON payload-extraction tasks from business documents, for the demo store's ``json`` domain.

Five document types -- invoices, purchase orders, shipping notices, support tickets and expense
reports -- are written as prose from a per-record RNG (deterministic for the seed and the
record's position). Each type has a JSON Schema (Draft 2020-12); each record has a gold payload
that validates against it and the ``fields`` the ``json-schema`` verifier compares. The task's
``answer`` is that verifier's reference, ``{"schema", "gold", "fields"}`` JSON-encoded.

The student sees the document, the instructions and the schema. Student-visible text carries no
personal data: companies, cities, document numbers (INV-2041), SKUs, amounts and dates only --
no e-mail addresses, phone numbers, card numbers, IBANs or national ids.

The privileged context is a reviewer note: the reasoning behind the gold payload and the payload
itself. Many notes deliberately carry *fictional* PII so that a redaction policy has something
to redact: e-mail addresses on reserved domains (``*.example.com``, ``example.org``), phone
numbers from ranges reserved for fiction (Ofcom's 020 7946 0xxx and 0161 496 0xxx, North
American 555-01xx), a few mod-97-valid IBANs on the fictional bank code ``WEST`` and a few
Luhn-valid payment-card *test* numbers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

# the module's old name, kept: it seeds each record's RNG and is recorded in provenance, so
# changing it would change every generated document and every snapshot digest
GENERATOR = "rlsd.context.demo_json:v1"
DEFAULT_N = 150
VERIFIER = "json-schema"
VERIFIED_BY = "generator:json-documents (gold validated against its schema)"
LICENSE = "generated (fictional data)"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

# Fictional company names (the ones Microsoft uses in its samples) and real city names.
COMPANIES = (
    "Contoso Ltd", "Fabrikam Inc", "Northwind Traders", "Tailspin Toys", "Wide World Importers",
    "Adventure Works", "Litware Inc", "Proseware Inc", "Coho Winery", "Alpine Ski House",
    "Woodgrove Bank", "Blue Yonder Airlines", "Fourth Coffee", "Lucerne Publishing",
    "Trey Research", "Wingtip Toys", "Humongous Insurance", "Relecloud",
)  # fmt: skip
CITIES = (
    "Leeds", "Lyon", "Rotterdam", "Porto", "Gdansk", "Aarhus", "Bilbao", "Graz", "Turin",
    "Ghent", "Tampere", "Brno", "Cork", "Malmo", "Bremen",
)  # fmt: skip
CURRENCIES = ("EUR", "GBP", "USD")
# (description, SKU prefix, unit price range)
PRODUCTS = (
    ("ergonomic office chair", "CHR", (89, 249)),
    ("standing desk frame", "DSK", (199, 459)),
    ("27-inch monitor", "MON", (159, 389)),
    ("wireless keyboard", "KBD", (19, 89)),
    ("USB-C docking station", "DOC", (79, 229)),
    ("laser printer toner", "TNR", (39, 119)),
    ("box of A4 copy paper", "PAP", (18, 42)),
    ("noise-cancelling headset", "HDS", (59, 199)),
    ("conference webcam", "CAM", (49, 179)),
    ("managed network switch", "NSW", (149, 699)),
    ("thermal label printer", "LBL", (99, 259)),
    ("handheld barcode scanner", "BCS", (69, 219)),
)
CARRIERS = ("DHL Freight", "DB Schenker", "GEODIS", "DSV Road", "Kuehne and Nagel")
PRODUCTS_SUPPORTED = (
    "billing portal", "warehouse scanner app", "payroll module", "reporting dashboard",
    "mobile ordering app", "single sign-on service",
)  # fmt: skip
SEVERITIES = ("low", "medium", "high", "critical")
CATEGORIES = ("billing", "outage", "bug", "access", "feature_request")
DEPARTMENTS = ("Procurement", "Sales", "Engineering", "Finance", "Marketing", "Logistics")

# Fictional reviewers for the privileged notes (never in student text).
REVIEWER_NAMES = (
    ("Ana", "Novak"), ("Chidi", "Okafor"), ("Signe", "Lindqvist"), ("Luc", "Moreau"),
    ("Aoife", "Brennan"), ("Kenji", "Tanaka"), ("Rita", "Silva"), ("Marek", "Kowalski"),
)  # fmt: skip
REVIEW_TEAMS = ("finance", "ap", "ops", "support", "procurement")
#: Luhn-valid payment-card numbers published as test numbers by card processors.
TEST_CARDS = ("4111 1111 1111 1111", "5555 5555 5555 4444", "4012 8888 8888 1881")

DOC_TYPES = ("invoice", "purchase_order", "shipping_notice", "support_ticket", "expense_report")

INSTRUCTIONS = (
    "Extract the {label} above into one JSON object that validates against the JSON Schema "
    "below. Write dates as YYYY-MM-DD, amounts and quantities as plain numbers (no currency "
    "symbols, no thousands separators), and list repeated items in the order the document "
    "gives them. Reply with the JSON object only."
)

_CENT = Decimal("0.01")


# ---------------------------------------------------------------------------------------------
# Small helpers.
def money(value: Decimal) -> float:
    """A JSON number for an amount (rounded to cents)."""
    return float(value.quantize(_CENT))


def fmt_money(value: Decimal) -> str:
    return f"{value.quantize(_CENT):,.2f}"


def fmt_date(d: date, rng: random.Random) -> str:
    """A date as a person writes it: three styles, so extraction means normalising it."""
    style = rng.randrange(3)
    if style == 0:
        return f"{d.day} {d.strftime('%B')} {d.year}"
    if style == 1:
        return f"{d.strftime('%B')} {d.day}, {d.year}"
    return d.isoformat()


def random_date(rng: random.Random) -> date:
    return date(2024, 1, 1) + timedelta(days=rng.randrange(366))


def price(rng: random.Random, bounds: tuple[int, int]) -> Decimal:
    return Decimal(rng.randint(bounds[0] * 100, bounds[1] * 100)) / 100


def sku(rng: random.Random, prefix: str) -> str:
    return f"{prefix}-{rng.randint(1000, 9999)}"


def join_words(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _obj(properties: dict[str, Any], title: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object"}
    if title:
        out = {"$schema": DRAFT, "title": title, **out}
    out.update(
        {"required": list(properties), "additionalProperties": False, "properties": properties}
    )
    return out


_DATE = {"type": "string", "format": "date"}
_NAME = {"type": "string", "minLength": 1}
_AMOUNT = {"type": "number", "minimum": 0}
_COUNT = {"type": "integer", "minimum": 1}
_SKU = {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}
_CURRENCY = {"type": "string", "enum": list(CURRENCIES)}


@dataclass(frozen=True)
class Draft:
    """What a document generator returns before the common wrapping."""

    label: str
    document: str
    schema: dict[str, Any]
    gold: dict[str, Any]
    fields: list[str]
    reasoning: str


# ---------------------------------------------------------------------------------------------
# Document generators: (rng) -> Draft.
def _line_items(rng: random.Random, k: int) -> list[tuple[str, str, int, Decimal]]:
    return [
        (desc, sku(rng, prefix), rng.randint(1, 12), price(rng, bounds))
        for desc, prefix, bounds in rng.sample(PRODUCTS, k)
    ]


def make_invoice(rng: random.Random) -> Draft:
    number = f"INV-{rng.randint(1000, 9999)}"
    (vendor, customer), (vcity, ccity) = rng.sample(COMPANIES, 2), rng.sample(CITIES, 2)
    issued = random_date(rng)
    terms = rng.choice((14, 30, 45, 60))
    due = issued + timedelta(days=terms)
    cur = rng.choice(CURRENCIES)
    items = _line_items(rng, rng.randint(1, 4))
    shipping = Decimal(rng.choice(("0", "4.00", "9.50", "12.00", "25.00")))
    total = sum((q * p for _, _, q, p in items), Decimal(0)) + shipping

    lines = [f"Invoice {number}", f"From: {vendor}, {vcity}", f"Bill to: {customer}, {ccity}"]
    lines.append(f"Invoice date: {fmt_date(issued, rng)}")
    if rng.random() < 0.5:
        lines.append(f"Payment due by {fmt_date(due, rng)}.")
    else:
        lines.append(f"Payment terms: net {terms} days from the invoice date.")
    lines.append(f"All amounts in {cur}.")
    for desc, code, q, p in items:
        lines.append(f"- {q} x {desc} (SKU {code}) at {fmt_money(p)} each")
    lines.append(
        f"Shipping and handling: {fmt_money(shipping)}" if shipping else "Shipping: free of charge"
    )
    if rng.random() < 0.5:
        lines.append(f"Amount due: {cur} {fmt_money(total)}")
    lines.append(f"Thank you for your business. {vendor} accounts team, {vcity}.")

    gold = {
        "invoice_number": number,
        "issue_date": issued.isoformat(),
        "due_date": due.isoformat(),
        "currency": cur,
        "vendor": {"name": vendor, "city": vcity},
        "customer": {"name": customer, "city": ccity},
        "line_items": [
            {"sku": code, "description": desc, "quantity": q, "unit_price": money(p)}
            for desc, code, q, p in items
        ],
        "shipping": money(shipping),
        "total": money(total),
    }
    party = _obj({"name": _NAME, "city": _NAME})
    item = _obj({"sku": _SKU, "description": _NAME, "quantity": _COUNT, "unit_price": _AMOUNT})
    schema = _obj(
        {
            "invoice_number": {"type": "string", "pattern": "^INV-[0-9]{4}$"},
            "issue_date": _DATE,
            "due_date": _DATE,
            "currency": _CURRENCY,
            "vendor": party,
            "customer": party,
            "line_items": {"type": "array", "minItems": 1, "items": item},
            "shipping": _AMOUNT,
            "total": _AMOUNT,
        },
        "Invoice",
    )
    fields = ["invoice_number", "issue_date", "due_date", "currency", "vendor.name"]
    fields += ["vendor.city", "customer.name", "customer.city", "shipping", "total"]
    for i in range(len(items)):
        fields += [f"line_items.{i}.sku", f"line_items.{i}.quantity", f"line_items.{i}.unit_price"]
    terms_sum = " + ".join(f"{q} × {fmt_money(p)}" for _, _, q, p in items)
    reasoning = (
        f"total = {terms_sum} + shipping {fmt_money(shipping)} = {fmt_money(total)} {cur}; "
        f"due date = {issued.isoformat()} + {terms} days = {due.isoformat()}."
    )
    return Draft("invoice", "\n".join(lines), schema, gold, fields, reasoning)


def make_purchase_order(rng: random.Random) -> Draft:
    number = f"PO-{rng.randint(10000, 99999)}"
    buyer, supplier = rng.sample(COMPANIES, 2)
    city = rng.choice(CITIES)
    ordered = random_date(rng)
    delivery = ordered + timedelta(days=rng.randint(7, 40))
    terms = rng.choice((30, 45, 60, 90))
    items = [(desc, sku(rng, p), rng.randint(1, 40)) for desc, p, _ in rng.sample(PRODUCTS, 3)]
    items = items[: rng.randint(1, 3)]
    total_qty = sum(q for _, _, q in items)

    wanted = join_words([f"{q} units of {code} ({desc})" for desc, code, q in items])
    doc = (
        f"Purchase order {number}\n"
        f"Buyer: {buyer}, {city}\nSupplier: {supplier}\n"
        f"Order date: {fmt_date(ordered, rng)}\n\n"
        f"Please supply {wanted}. Deliver to our {city} warehouse no later than "
        f"{fmt_date(delivery, rng)}. Payment is due {terms} days after delivery. Quote the "
        f"order number {number} on every delivery note."
    )
    gold = {
        "po_number": number,
        "order_date": ordered.isoformat(),
        "requested_delivery_date": delivery.isoformat(),
        "buyer": {"name": buyer, "city": city},
        "supplier": {"name": supplier},
        "payment_terms_days": terms,
        "items": [{"sku": code, "quantity": q} for _, code, q in items],
        "total_quantity": total_qty,
    }
    schema = _obj(
        {
            "po_number": {"type": "string", "pattern": "^PO-[0-9]{5}$"},
            "order_date": _DATE,
            "requested_delivery_date": _DATE,
            "buyer": _obj({"name": _NAME, "city": _NAME}),
            "supplier": _obj({"name": _NAME}),
            "payment_terms_days": _COUNT,
            "items": {
                "type": "array",
                "minItems": 1,
                "items": _obj({"sku": _SKU, "quantity": _COUNT}),
            },
            "total_quantity": _COUNT,
        },
        "PurchaseOrder",
    )
    fields = ["po_number", "order_date", "requested_delivery_date", "buyer.name", "buyer.city"]
    fields += ["supplier.name", "payment_terms_days", "total_quantity"]
    for i in range(len(items)):
        fields += [f"items.{i}.sku", f"items.{i}.quantity"]
    reasoning = (
        f"total_quantity = {' + '.join(str(q) for _, _, q in items)} = {total_qty}; "
        f"payment terms {terms} days; delivery date as requested."
    )
    return Draft("purchase order", doc, schema, gold, fields, reasoning)


def make_shipping_notice(rng: random.Random) -> Draft:
    number = f"ASN-{rng.randint(1000, 9999)}"
    po = f"PO-{rng.randint(10000, 99999)}"
    shipper, consignee = rng.sample(COMPANIES, 2)
    origin, dest = rng.sample(CITIES, 2)
    shipped = random_date(rng)
    eta = shipped + timedelta(days=rng.randint(1, 6))
    carrier = rng.choice(CARRIERS)
    weights = [Decimal(rng.randint(15, 4800)) / 10 for _ in range(rng.randint(1, 5))]
    gross = sum(weights, Decimal(0))
    contents = [(desc, sku(rng, p), rng.randint(1, 60)) for desc, p, _ in rng.sample(PRODUCTS, 2)]
    contents = contents[: rng.randint(1, 2)]

    parcels = join_words([f"{w} kg" for w in weights])
    doc = (
        f"Advance shipping notice {number} from {shipper} to {consignee}.\n"
        f"Your purchase order: {po}.\n"
        f"The goods left {origin} on {fmt_date(shipped, rng)} with {carrier} and are expected "
        f"in {dest} on {fmt_date(eta, rng)}.\n"
        f"The consignment is {len(weights)} package{'s' if len(weights) > 1 else ''} "
        f"weighing {parcels}.\n"
        "Contents: "
        + join_words([f"{q} x {code} ({desc})" for desc, code, q in contents])
        + ".\nPlease report any damage within 48 hours of delivery."
    )
    gold = {
        "shipment_id": number,
        "purchase_order": po,
        "carrier": carrier,
        "ship_date": shipped.isoformat(),
        "estimated_arrival": eta.isoformat(),
        "origin_city": origin,
        "destination_city": dest,
        "package_count": len(weights),
        "gross_weight_kg": float(gross),
        "contents": [{"sku": code, "quantity": q} for _, code, q in contents],
    }
    schema = _obj(
        {
            "shipment_id": {"type": "string", "pattern": "^ASN-[0-9]{4}$"},
            "purchase_order": {"type": "string", "pattern": "^PO-[0-9]{5}$"},
            "carrier": {"type": "string", "enum": list(CARRIERS)},
            "ship_date": _DATE,
            "estimated_arrival": _DATE,
            "origin_city": _NAME,
            "destination_city": _NAME,
            "package_count": _COUNT,
            "gross_weight_kg": {"type": "number", "exclusiveMinimum": 0},
            "contents": {
                "type": "array",
                "minItems": 1,
                "items": _obj({"sku": _SKU, "quantity": _COUNT}),
            },
        },
        "ShippingNotice",
    )
    fields = ["shipment_id", "purchase_order", "carrier", "ship_date", "estimated_arrival"]
    fields += ["origin_city", "destination_city", "package_count", "gross_weight_kg"]
    for i in range(len(contents)):
        fields += [f"contents.{i}.sku", f"contents.{i}.quantity"]
    reasoning = (
        f"gross weight = {' + '.join(str(w) for w in weights)} = {gross} kg over "
        f"{len(weights)} package(s)."
    )
    return Draft("shipping notice", doc, schema, gold, fields, reasoning)


_SYMPTOMS = {
    "billing": "was charged twice for the same subscription period",
    "outage": "cannot reach the service at all since the overnight maintenance window",
    "bug": "gets wrong totals on exported reports",
    "access": "cannot sign in after the latest update",
    "feature_request": "asks for a bulk export of historic records",
}


def make_support_ticket(rng: random.Random) -> Draft:
    number = f"TCK-{rng.randint(10000, 99999)}"
    company, city = rng.choice(COMPANIES), rng.choice(CITIES)
    opened = random_date(rng)
    product = rng.choice(PRODUCTS_SUPPORTED)
    category = rng.choice(CATEGORIES)
    severity = rng.choice(SEVERITIES)
    users = rng.randint(1, 400)
    invoice = f"INV-{rng.randint(1000, 9999)}" if category == "billing" else None

    affected = rng.choice(("Users affected: {n}.", "The customer counts {n} affected user(s)."))
    doc = (
        f"Support ticket {number}, opened {fmt_date(opened, rng)}.\n"
        f"Customer: {company} ({city} office). Product: {product}.\n"
        f"Report: the customer {_SYMPTOMS[category]}. {affected.format(n=users)}"
    )
    if invoice:
        doc += f" The disputed charge is on invoice {invoice}."
    doc += f"\nTriage: category {category.replace('_', ' ')}, severity {severity}." + (
        "" if invoice else " No invoice is involved."
    )
    gold = {
        "ticket_id": number,
        "opened_date": opened.isoformat(),
        "company": company,
        "product": product,
        "category": category,
        "severity": severity,
        "affected_users": users,
        "related_invoice": invoice,
    }
    schema = _obj(
        {
            "ticket_id": {"type": "string", "pattern": "^TCK-[0-9]{5}$"},
            "opened_date": _DATE,
            "company": _NAME,
            "product": {"type": "string", "enum": list(PRODUCTS_SUPPORTED)},
            "category": {"type": "string", "enum": list(CATEGORIES)},
            "severity": {"type": "string", "enum": list(SEVERITIES)},
            "affected_users": _COUNT,
            "related_invoice": {
                "anyOf": [{"type": "string", "pattern": "^INV-[0-9]{4}$"}, {"type": "null"}]
            },
        },
        "SupportTicket",
    )
    reasoning = f"category and severity copied from the triage line; affected_users = {users}; " + (
        f"related_invoice = {invoice}." if invoice else "no invoice, so related_invoice = null."
    )
    return Draft("support ticket", doc, schema, gold, list(gold), reasoning)


def make_expense_report(rng: random.Random) -> Draft:
    number = f"EXP-{rng.randint(1000, 9999)}"
    dept, city, cur = rng.choice(DEPARTMENTS), rng.choice(CITIES), rng.choice(CURRENCIES)
    start = random_date(rng)
    nights = rng.randint(1, 5)
    end = start + timedelta(days=nights)
    rate = price(rng, (70, 190))
    transport, meals, taxi = price(rng, (40, 420)), price(rng, (15, 160)), price(rng, (8, 90))
    # (category, amount, how the document words it); the lodging amount must be computed
    expenses = [
        ("transport", transport, f"train and flight tickets came to {fmt_money(transport)}"),
        (
            "lodging",
            rate * nights,
            f"the hotel charged {nights} night{'s' if nights > 1 else ''} at {fmt_money(rate)} each",
        ),
        ("meals", meals, f"meals totalled {fmt_money(meals)}"),
    ]
    if rng.random() < 0.5:
        expenses.append(("other", taxi, f"local taxis cost {fmt_money(taxi)}"))
    rng.shuffle(expenses)
    total = sum((a for _, a, _ in expenses), Decimal(0))
    parts = [text for _, _, text in expenses]
    doc = (
        f"Expense report {number}, {dept} department. Amounts in {cur}.\n"
        f"Trip to {city} from {fmt_date(start, rng)} to {fmt_date(end, rng)}.\n"
        f"Claimed: {join_words(parts)}.\nCategories: transport, lodging, meals, other."
    )
    gold = {
        "report_id": number,
        "department": dept,
        "currency": cur,
        "trip": {
            "destination": city,
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "nights": nights,
        },
        "expenses": [{"category": cat, "amount": money(a)} for cat, a, _ in expenses],
        "total": money(total),
    }
    schema = _obj(
        {
            "report_id": {"type": "string", "pattern": "^EXP-[0-9]{4}$"},
            "department": {"type": "string", "enum": list(DEPARTMENTS)},
            "currency": _CURRENCY,
            "trip": _obj(
                {"destination": _NAME, "start_date": _DATE, "end_date": _DATE, "nights": _COUNT}
            ),
            "expenses": {
                "type": "array",
                "minItems": 1,
                "items": _obj(
                    {
                        "category": {
                            "type": "string",
                            "enum": ["transport", "lodging", "meals", "other"],
                        },
                        "amount": _AMOUNT,
                    }
                ),
            },
            "total": _AMOUNT,
        },
        "ExpenseReport",
    )
    fields = ["report_id", "department", "currency", "trip.destination", "trip.start_date"]
    fields += ["trip.end_date", "trip.nights", "total"]
    for i in range(len(expenses)):
        fields += [f"expenses.{i}.category", f"expenses.{i}.amount"]
    reasoning = (
        f"lodging = {nights} × {fmt_money(rate)} = {fmt_money(rate * nights)}; total = "
        + " + ".join(fmt_money(a) for _, a, _ in expenses)
        + f" = {fmt_money(total)} {cur}; nights = {end.isoformat()} − {start.isoformat()} = {nights}."
    )
    return Draft("expense report", doc, schema, gold, fields, reasoning)


GENERATORS: dict[str, Callable[[random.Random], Draft]] = {
    "invoice": make_invoice,
    "purchase_order": make_purchase_order,
    "shipping_notice": make_shipping_notice,
    "support_ticket": make_support_ticket,
    "expense_report": make_expense_report,
}


# ---------------------------------------------------------------------------------------------
# Fictional PII for the privileged notes.
def iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616 check digits: 98 - (BBAN + country + '00' as digits) mod 97."""
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{98 - int(digits) % 97:02d}"


def fictional_iban(rng: random.Random) -> str:
    """A mod-97-valid GB IBAN on the fictional bank code WEST, grouped by four."""
    bban = f"WEST{rng.randint(0, 999999):06d}{rng.randint(0, 99999999):08d}"
    iban = "GB" + iban_check_digits("GB", bban) + bban
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def fictional_phone(rng: random.Random) -> str:
    """A number from a range reserved for drama / fiction (Ofcom, NANP 555-01xx)."""
    kind = rng.randrange(3)
    if kind == 0:
        return f"+44 20 7946 0{rng.randint(0, 999):03d}"
    if kind == 1:
        return f"+44 161 496 0{rng.randint(0, 999):03d}"
    return f"+1 ({rng.choice((202, 312, 415, 617))}) 555-01{rng.randint(0, 99):02d}"


def reviewer_note(
    rng: random.Random, reasoning: str, gold: dict[str, Any]
) -> tuple[str, tuple[str, ...]]:
    """(note, kinds of PII in it). About 7 in 10 notes name an e-mail, 5 in 10 a phone."""
    first, last = rng.choice(REVIEWER_NAMES)
    pii: list[str] = []
    who = f"{first} {last}"
    contact = []
    if rng.random() < 0.7:
        domain = f"{rng.choice(REVIEW_TEAMS)}.example.com" if rng.random() < 0.7 else "example.org"
        contact.append(f"{first[0].lower()}.{last.lower()}@{domain}")
        pii.append("email")
    if rng.random() < 0.5:
        contact.append(fictional_phone(rng))
        pii.append("phone")
    if not contact and rng.random() < 0.5:
        who = "the finance review queue"
    note = f"Reviewer note: gold payload verified by {who}"
    note += f" ({', '.join(contact)})." if contact else "."
    note += f" Reasoning: {reasoning}"
    extra = rng.random()
    if extra < 0.12:
        note += f" Refunds for this account go to IBAN {fictional_iban(rng)}."
        pii.append("iban")
    elif extra < 0.22:
        note += f" Corporate card on file: {rng.choice(TEST_CARDS)}."
        pii.append("card_number")
    note += f" Payload: {json.dumps(gold, ensure_ascii=False)}"
    return note, tuple(pii)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JsonTask:
    """One extraction task: the student question, the verifier reference and the reviewer note."""

    task_id: str
    doc_type: str
    index: int
    document: str
    question: str
    schema: dict[str, Any] = field(hash=False)
    gold: dict[str, Any] = field(hash=False)
    fields: list[str] = field(hash=False)
    privileged_context: str
    pii: tuple[str, ...]

    @property
    def reference(self) -> dict[str, Any]:
        return {"schema": self.schema, "gold": self.gold, "fields": self.fields}

    @property
    def answer(self) -> str:
        """The json-schema verifier's reference, JSON-encoded (it decodes string references)."""
        return json.dumps(self.reference, sort_keys=True, ensure_ascii=False)


def student_question(draft: Draft) -> str:
    return (
        f"Document:\n<<<\n{draft.document}\n>>>\n\n"
        f"{INSTRUCTIONS.format(label=draft.label)}\n\n"
        f"JSON Schema:\n{json.dumps(draft.schema, indent=2)}"
    )


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    """A format-checking validator for a schema (checked once: that is the slow part)."""
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def check_gold(doc_type: str, draft: Draft) -> None:
    """The gold payload must validate against its schema (a generator bug otherwise)."""
    validator = _validator(json.dumps(draft.schema, sort_keys=True))
    errors = list(validator.iter_errors(draft.gold))
    if errors:
        raise ValueError(f"demo_json {doc_type}: gold payload fails its schema: {errors[0]}")


def make_task(doc_type: str, index: int, seed: int) -> JsonTask:
    """Record ``index`` of ``doc_type``: its own RNG, so records do not depend on ``n``."""
    rng = random.Random(f"{GENERATOR}:{seed}:{doc_type}:{index}")
    draft = GENERATORS[doc_type](rng)
    check_gold(doc_type, draft)
    note, pii = reviewer_note(rng, draft.reasoning, draft.gold)
    digest = hashlib.sha256(
        json.dumps([doc_type, draft.document, draft.gold], sort_keys=True).encode("utf-8")
    ).hexdigest()[:8]
    return JsonTask(
        f"json-{doc_type}-{digest}", doc_type, index, draft.document, student_question(draft),
        draft.schema, draft.gold, draft.fields, note, pii,
    )  # fmt: skip


def generate_json_tasks(n: int = DEFAULT_N, *, seed: int = 0) -> list[JsonTask]:
    """``n`` tasks, document types in rotation; deterministic for ``seed``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out: list[JsonTask] = []
    seen: set[str] = set()
    position = 0
    while len(out) < n:
        doc_type = DOC_TYPES[position % len(DOC_TYPES)]
        task = make_task(doc_type, position // len(DOC_TYPES), seed)
        position += 1
        if task.task_id not in seen:  # identical documents are not two tasks
            seen.add(task.task_id)
            out.append(task)
    return out
