"""Every setting has its row in docs/config.md's one table, with the code's default, and every
row there names a setting that exists; the variables the launchers and the client read are
read there; and the settings stay few."""

import re
from pathlib import Path

from core.config import Settings

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "docs" / "config.md"
MOST = 47
"""At most this many settings: issue 26 brought them to 40; issue 28 names seven more (slots,
GPU memory per job, three of preemption, the running cap, the Keras backend)."""
READERS = ("scripts", "Makefile", "docker-compose.yml", ".env.example", "client/convlab_client")


def _table(heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first table under ``## heading``, head rows left out."""
    text = CONFIG.read_text()
    section = text[text.index(f"\n## {heading}\n") :]
    rows: list[list[str]] = []
    for line in section.splitlines()[2:]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows and not line.startswith("|"):
            break
    return rows[1:]


def _documented() -> dict[str, str]:
    """Setting name (``home`` for ``CONVLAB_HOME``) → the default its row shows."""
    rows = {}
    for cells in _table("Settings"):
        named = re.fullmatch(r"`CONVLAB_([A-Z0-9_]+)`", cells[0])
        if named:  # else a group's heading row
            rows[named.group(1).lower()] = cells[1]
    return rows


def _shown(default: object) -> str | None:
    """How the table shows a default that has one simple form; None for the others."""
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    if isinstance(default, int | float) or (isinstance(default, str) and default):
        return f"`{default}`"
    if default == []:
        return "`[]`"
    return None


def test_every_setting_has_one_row_and_every_row_a_setting() -> None:
    rows = _documented()
    fields = set(Settings.model_fields)
    assert sorted(fields - rows.keys()) == [], "settings without a row in docs/config.md"
    assert sorted(rows.keys() - fields) == [], "rows of docs/config.md naming no setting"
    assert len(_table("Settings")) == len(rows) + 6, "one row per setting, and six groups"


def test_each_row_shows_the_default_the_code_has() -> None:
    rows = _documented()
    for name, field in Settings.model_fields.items():
        shown = _shown(field.default)
        if shown is not None:
            assert rows[name] == shown, f"CONVLAB_{name.upper()}: {rows[name]} in docs/config.md"


def test_the_settings_stay_few() -> None:
    assert len(Settings.model_fields) <= MOST


def test_the_launchers_variables_are_read_where_the_table_says_and_are_no_settings() -> None:
    sources = "\n".join(
        path.read_text()
        for reader in READERS
        for path in ([ROOT / reader] if (ROOT / reader).is_file() else (ROOT / reader).rglob("*"))
        if path.is_file() and path.suffix in {"", ".sh", ".py", ".yml", ".example"}
    )
    for cells in _table("Variables of the launchers and the client"):
        variable = cells[0].strip("`")
        assert variable in sources, f"{variable} is read by none of {READERS}"
        assert variable.removeprefix("CONVLAB_").lower() not in Settings.model_fields
