"""Real one-hop facts about countries, built offline from the ``countryinfo`` and ``babel`` packages.

``country_facts()`` returns the canonical facts table (``facts.FACT_COLUMNS``) with one
fact per (country, relation), or one per question template with ``all_templates``:

=============  ====================================================  ==========================
relation       answer (object)                                       aliases
=============  ====================================================  ==========================
capital        countryinfo ``capital``                               accent-free spelling, a
                                                                     few common short forms
currency       babel's English name of the ISO 4217 code             the ISO code
official_lang  babel's English name of the ISO 639-1 code            (none)
region         countryinfo ``region`` (Africa, Americas, ...)        continent names
subregion      countryinfo ``subregion`` (Western Europe, ...)       short forms (East Asia)
=============  ====================================================  ==========================

Data rules (each keeps ambiguous facts out rather than guessing):

- one entry per current ISO alpha-2 code (one babel knows); entries without a code, a name
  or the field are skipped, and so are capitals given as several cities;
- the country is named by countryinfo's name ("Ivory Coast"), or babel's English territory
  name when countryinfo's is inverted or qualified ("Virgin Islands, British"); names such as
  "United States" take "the" in questions;
- currency: the codes countryinfo lists, kept only where babel's current legal tender for the
  territory has exactly one of them (countryinfo's data is older: it still gives Croatia
  the kuna, which babel no longer does; such facts are dropped, as are countries with two
  tenders, such as Panama);
- official language: only countries with exactly one language listed;
- a fact whose answer appears in its question at the start of a word is dropped, and so is
  an alias that does: the capital of Djibouti is Djibouti, South Africa and the Central
  African Republic are in Africa, German is spoken in Germany, Tunis is the capital of Tunisia.

The question template of a fact is chosen by a hash of (country code, relation), so the
table is the same on every run and every machine. Fact ids are
``country:{alpha3}:{relation}`` (``:t{k}`` appended with ``all_templates``). Popularity is
the population countryinfo gives.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import unicodedata
from collections import Counter
from typing import Any

import pandas as pd

from massshift.data.facts import FACT_COLUMNS, facts_from_records
from massshift.data.matching import normalize

logger = logging.getLogger(__name__)

RELATIONS = ("capital", "currency", "official_language", "region", "subregion")

TEMPLATES: dict[str, tuple[str, ...]] = {
    "capital": (
        "What is the capital of {s}?",
        "What is the capital city of {s}?",
        "Which city is the capital of {s}?",
        "Name the capital of {s}.",
    ),
    "currency": (
        "What is the currency of {s}?",
        "What currency is used in {s}?",
        "Which currency does {s} use?",
        "What is the official currency of {s}?",
    ),
    "official_language": (
        "What is the official language of {s}?",
        "Which language is the official language of {s}?",
        "What language is officially spoken in {s}?",
    ),
    "region": (
        "On which continent is {s}?",
        "Which continent is {s} in?",
        "In which region of the world is {s}?",
    ),
    "subregion": (
        "Which geographic subregion is {s} in?",
        "In which subregion of the world is {s} located?",
        "What part of the world, by UN subregion, is {s} in?",
    ),
}

# Hand-made alias tables: data, not inference. Keys are countryinfo's spellings.
_SUBREGION_CANON = {"South-eastern Asia": "South-Eastern Asia"}
_SUBREGION_ALIASES = {
    "South-Eastern Asia": ("Southeast Asia", "South East Asia"),
    "Eastern Asia": ("East Asia",),
    "Southern Asia": ("South Asia",),
    "Western Asia": ("West Asia",),
    "Central Asia": (),
    "Northern Africa": ("North Africa",),
    "Northern America": ("North America",),
    "Latin America and the Caribbean": ("Latin America",),
    "Australia and New Zealand": ("Australasia",),
    "Sub-Saharan Africa": ("Subsaharan Africa",),
    "Western Europe": ("West Europe",),
    "Eastern Europe": ("East Europe",),
    "Northern Europe": ("North Europe",),
    "Southern Europe": ("South Europe",),
}
_SOUTH_AMERICA = frozenset("AR BO BR CL CO EC GY PY PE SR UY VE GF FK".split())
_CENTRAL_AMERICA = frozenset("BZ CR SV GT HN MX NI PA".split())
_CAPITAL_ALIASES = {"Washington D.C.": ("Washington", "Washington DC"), "Kyiv": ("Kiev",)}
_THE_NAMES = frozenset({"Bahamas", "Gambia", "Netherlands", "Philippines", "Maldives", "Comoros", "Seychelles",
                        "Czech Republic"})
_THE_SUFFIXES = ("Islands", "Republic", "Emirates", "Kingdom", "States", "Territories", "Isles")


class RealFactsError(RuntimeError):
    """The optional data packages are missing or their data cannot be read."""


def _packages() -> tuple[dict[str, Any], Any, Any]:
    try:
        from babel import Locale
        from babel.numbers import get_currency_name, get_territory_currencies
        from countryinfo._cache import load_countries
    except ImportError as err:
        raise RealFactsError(
            f"country facts need the 'real' extra ({err.name} is missing): pip install 'massshift[real]' "
            "(countryinfo and babel)"
        ) from None
    countries = load_countries()["countries"]
    en = Locale("en")

    def tender(alpha2: str) -> list[str]:
        try:
            return list(get_territory_currencies(alpha2, tender=True))
        except Exception:  # babel raises for territories it does not know
            return []

    return countries, en, (tender, lambda code: get_currency_name(code, locale="en"))


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _with_variants(names: list[str]) -> list[str]:
    """The names, then their accent-free spellings, de-duplicated in order."""
    out = [n.strip() for n in names if n and n.strip()]
    out += [_ascii(n) for n in out]
    return list(dict.fromkeys(n for n in out if n))


def country_name(alpha2: str, data: dict[str, Any], en: Any) -> str:
    """The English name used in questions: countryinfo's, or babel's when countryinfo's is inverted
    or qualified ("Virgin Islands, British"), without parentheses, "&" spelled "and"."""
    name = str(data.get("name") or "").strip()
    if not name or "," in name or "(" in name:
        name = en.territories.get(alpha2) or ""
    name = re.sub(r"\s*\(.*?\)", "", name).replace(" & ", " and ").replace("’", "'")
    name = re.sub(r"^St\. ", "Saint ", name)
    return name.removeprefix("The ").strip()


def _with_article(name: str) -> str:
    if name in _THE_NAMES or name.startswith(("United ", "Republic of ", "Democratic Republic", "Federated ")) \
            or name.endswith(_THE_SUFFIXES):
        return f"the {name}"
    return name


def _answers(relation: str, alpha2: str, data: dict[str, Any], en: Any, currency: Any) -> list[str] | None:
    """Aliases (first is the object) of one relation of one country, or None when the data is unclear."""
    if relation == "capital":
        cap = data.get("capital")
        if not isinstance(cap, str) or not cap.strip() or "/" in cap:  # "Kralendijk / Oranjestad / ..."
            return None
        return _with_variants([cap, *_CAPITAL_ALIASES.get(cap.strip(), ())])
    if relation == "currency":
        tender, name_of = currency
        listed = [c for c in data.get("currencies") or [] if isinstance(c, str)]
        agreed = [c for c in listed if c in tender(alpha2)]
        if len(agreed) != 1:
            return None
        code = agreed[0]
        name = name_of(code)
        return _with_variants([name, code]) if name and name != code else None
    if relation == "official_language":
        langs = data.get("languages") or []
        if len(langs) != 1 or langs[0] not in en.languages:
            return None
        return _with_variants([en.languages[langs[0]]])
    if relation == "region":
        region = data.get("region")
        if not isinstance(region, str) or not region.strip():
            return None
        names = [region]
        if region == "Americas":
            names += ["the Americas", "America"]
            if alpha2 in _SOUTH_AMERICA:
                names.append("South America")
            elif alpha2 in _CENTRAL_AMERICA:
                names += ["Central America", "North America"]
            else:
                names.append("North America")
        if region == "Oceania":
            names.append("Australia and Oceania")
        return _with_variants(names)
    if relation == "subregion":
        sub = data.get("subregion")
        if not isinstance(sub, str) or not sub.strip():
            return None
        sub = _SUBREGION_CANON.get(sub, sub)
        return _with_variants([sub, *_SUBREGION_ALIASES.get(sub, ())])
    raise ValueError(f"unknown relation {relation!r}; use one of {', '.join(RELATIONS)}")


def _template_index(alpha2: str, relation: str, n: int) -> int:
    digest = hashlib.sha256(f"{alpha2}\x1f{relation}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % n


def _in_question(answer: str, question: str) -> bool:
    """Whether the answer starts a word run of the question: "Djibouti" in "... of Djibouti?",
    and "Africa" in "... the Central African Republic?" (a derived word gives it away too)."""
    a, q = normalize(answer), normalize(question)
    return bool(a) and f" {a}" in f" {q}"


def country_facts(relations: tuple[str, ...] = RELATIONS, all_templates: bool = False) -> pd.DataFrame:
    """The canonical facts table of country facts (see the module docstring for the rules).

    Args:
        relations: which relations to build (default: all five).
        all_templates: one fact per question template instead of one per (country, relation);
            paraphrases share subject, relation and object, so a split grouped by subject keeps
            them on one side.

    ``df.attrs["dropped"]`` counts the facts left out per reason.
    """
    unknown = [r for r in relations if r not in TEMPLATES]
    if unknown:
        raise ValueError(f"unknown relation(s) {unknown}; use any of {', '.join(RELATIONS)}")
    countries, en, currency = _packages()
    dropped: Counter[str] = Counter()
    by_code: dict[str, dict[str, Any]] = {}
    for key in sorted(countries):
        data = countries[key]
        alpha2 = (data.get("ISO") or {}).get("alpha2")
        if not isinstance(alpha2, str) or not alpha2 or alpha2 not in en.territories:
            dropped["no current ISO code"] += len(relations)  # Scotland, Serbia and Montenegro, ...
            continue
        # two entries share a code (Wales and the United Kingdom): keep the one babel names
        if alpha2 not in by_code or data.get("name") == en.territories[alpha2]:
            by_code[alpha2] = data
    records: list[dict[str, Any]] = []
    for alpha2 in sorted(by_code):
        data = by_code[alpha2]
        name = country_name(alpha2, data, en)
        alpha3 = (data.get("ISO") or {}).get("alpha3") or alpha2
        if not name:
            dropped["no name"] += len(relations)
            continue
        subject = _with_article(name)
        population = data.get("population")
        pop = float(population) if isinstance(population, (int, float)) and population > 0 else math.nan
        for relation in relations:
            answers = _answers(relation, alpha2, data, en, currency)
            if not answers:
                dropped[f"{relation}: missing or ambiguous in the data"] += 1
                continue
            templates = TEMPLATES[relation]
            chosen = range(len(templates)) if all_templates else [_template_index(alpha2, relation, len(templates))]
            for k in chosen:
                question = templates[k].format(s=subject)
                if _in_question(answers[0], question):
                    dropped[f"{relation}: answer inside the question"] += 1
                    continue
                kept = [a for a in answers if not _in_question(a, question)]
                fid = f"country:{alpha3}:{relation}" + (f":t{k}" if all_templates else "")
                records.append({"fact_id": fid, "question": question, "answers": kept, "subject": name,
                                "relation": relation, "object": answers[0], "popularity": pop})
    df = facts_from_records(records, schema="canonical", source="countryinfo")[list(FACT_COLUMNS)]
    df.attrs["dropped"] = dict(sorted(dropped.items()))
    logger.info("built %d country facts (%s); dropped: %s", len(df),
                ", ".join(f"{r} {n}" for r, n in df["relation"].value_counts().sort_index().items()),
                df.attrs["dropped"])
    return df
