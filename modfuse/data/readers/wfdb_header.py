"""A WFDB header parser that gives ``wfdb.rdheader``'s result in a fraction of its time.

``wfdb.rdheader`` matches each line with wfdb's own regular expressions (PhysioNet's header(5)
format), then looks every field's read default and type up in a pandas table, two to three
``.loc`` lookups per field and signal: 240 lookups, about 20 ms, for a 12-lead header, which is
90 % of reading a 10 s record. `parse_header` matches the lines with the same expressions and
applies the same rules from a dict built once from wfdb's tables, so a header parses in well
under a millisecond and the fields are wfdb's (``tests/test_readers_physio.py`` compares every
field with ``wfdb.rdheader`` on real PhysioNet headers).

Multi-segment headers, and wfdb versions whose internals differ from those read here (the
tables, the expressions, the ``Record`` fields), go through ``wfdb.rdheader`` itself.
"""

from __future__ import annotations

import datetime
import functools
from pathlib import Path
from typing import Any

__all__ = ["parse_header"]

# how each field's text becomes its value, by the type wfdb's tables allow for it
_TEXT, _INT, _FLOAT = "text", "int", "float"


@functools.cache
def _rules() -> tuple[dict[str, tuple[Any, str]], dict[str, tuple[Any, str]]] | None:
    """(record-line rules, signal-line rules): field -> (read default, kind), taken once from
    wfdb's own tables, in their order; None when this wfdb version does not have them or its
    line expressions capture other fields."""
    try:
        from wfdb.io import _header
    except ImportError:  # pragma: no cover - another wfdb layout
        return None
    names = ("RECORD_SPECS", "SIGNAL_SPECS", "int_types", "float_types", "rx_record", "rx_signal")
    if not all(hasattr(_header, name) for name in names):
        return None
    tables: tuple[Any, Any] = (_header.RECORD_SPECS, _header.SIGNAL_SPECS)
    ints, floats = _header.int_types, _header.float_types
    # the expressions' groups must be the tables' fields, or this parse would miss some
    expressions = (_header.rx_record, _header.rx_signal)
    if any(set(rx.groupindex) != set(table.index) for rx, table in zip(expressions, tables, strict=True)):
        return None

    def rules(table: Any) -> dict[str, tuple[Any, str]]:
        kinds = {ints: _INT, floats: _FLOAT}
        return {f: (table.loc[f, "read_default"], kinds.get(table.loc[f, "allowed_types"], _TEXT)) for f in table.index}

    return rules(tables[0]), rules(tables[1])


def _record_line(line: str, rules: dict[str, tuple[Any, str]]) -> dict[str, Any] | None:
    from wfdb.io.header import rx_record, wfdb_strptime

    match = rx_record.match(line)
    if match is None:
        return None
    text = match.groupdict()
    fields: dict[str, Any] = {}
    for field, (default, kind) in rules.items():
        value = text[field]
        if value == "":
            fields[field] = default
        elif kind == _INT:
            fields[field] = int(value)
        elif kind == _FLOAT:
            number = float(value)
            # wfdb keeps a whole sampling rate as an int (360, not 360.0)
            fields[field] = int(number) if field == "fs" and round(number, 8) == float(int(number)) else number
        elif field == "base_time":
            fields[field] = wfdb_strptime(value)
        elif field == "base_date":
            fields[field] = datetime.datetime.strptime(value, "%d/%m/%Y").date()
        else:
            fields[field] = value
    if fields.get("base_date") and fields.get("base_time"):
        fields["base_datetime"] = datetime.datetime.combine(fields["base_date"], fields["base_time"])
    return fields


def _signal_lines(lines: list[str], rules: dict[str, tuple[Any, str]]) -> dict[str, list[Any]] | None:
    from wfdb.io.header import rx_signal

    fields: dict[str, list[Any]] = {f: [None] * len(lines) for f in rules}
    for ch, line in enumerate(lines):
        match = rx_signal.match(line)
        if match is None:
            return None
        text = match.groupdict()
        for field, (default, kind) in rules.items():
            value = text[field]
            if value == "":
                # a missing baseline is the ADC zero when that is given
                fields[field][ch] = int(text["adc_zero"]) if field == "baseline" and text["adc_zero"] else default
            elif kind == _INT:
                fields[field][ch] = int(value)
            elif kind == _FLOAT:
                number = float(value)
                fields[field][ch] = 200.0 if field == "adc_gain" and number == 0 else number  # gain 0 means 200
            else:
                fields[field][ch] = value
    return fields


def parse_header(name: str) -> Any:
    """The header of record ``name`` (a path without ``.hea``) as ``wfdb.rdheader(name)``
    returns it: a ``wfdb.Record`` without signal (or a ``wfdb.MultiRecord``).

    Raises:
        FileNotFoundError: no ``name.hea``.
        ValueError: a record or signal line wfdb's syntax rejects (``HeaderSyntaxError``,
            raised by ``wfdb.rdheader``, to which such headers are handed).
    """
    import wfdb
    from wfdb.io.header import parse_header_content

    rules = _rules()
    if rules is None:
        return wfdb.rdheader(name)
    # wfdb reads headers as ASCII and drops other bytes
    content = Path(name + ".hea").read_text(encoding="ascii", errors="ignore")
    lines, comments = parse_header_content(content)
    record_fields = _record_line(lines[0], rules[0]) if lines else None
    if record_fields is None or record_fields.get("n_seg") is not None:
        return wfdb.rdheader(name)  # multi-segment, or wfdb's own syntax error
    signal_fields = _signal_lines(lines[1:], rules[1]) if len(lines) > 1 else {}
    if signal_fields is None:
        return wfdb.rdheader(name)
    record = wfdb.Record()
    for field, values in signal_fields.items():
        setattr(record, field, values)
    for field, value in record_fields.items():
        if field != "n_seg":
            setattr(record, field, value)
    record.comments = [line.strip(" \t#") for line in comments]
    return record
