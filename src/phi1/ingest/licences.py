"""Declared licences of installed distributions as SPDX expressions, and the allow-list.

    declared_licence(dist.metadata)        # 'MIT', 'Apache-2.0 OR BSD-3-Clause', 'unknown'
    allowed = allow_list(["MIT", "License :: OSI Approved :: BSD License"])
    permits("Apache-2.0 OR GPL-2.0-only", allowed)  # an OR needs one allowed branch

A distribution's licence is the first of these that gives one:
1. `License-Expression` (PEP 639), canonicalised by packaging.licenses;
2. `License`, when its first line is a valid SPDX expression or a common name ("MIT
   License", "Apache 2.0", "New BSD"); whole licence texts pasted there are skipped;
3. its `License :: ...` classifiers, several joined with OR.
Otherwise it is `unknown` (as is a file no distribution owns).

Names that PEP 639 calls ambiguous (the classifiers "BSD License" and "Apache Software
License", the bare name "BSD") name no version or variant: they become
`LicenseRef-BSD`, `LicenseRef-Apache`..., never a guessed SPDX id, so an allow-list has
to name them itself.

The allow-list takes SPDX ids, those LicenseRef ids, classifier strings or common names,
all mapped to SPDX, plus `unknown`. An expression is permitted when each AND operand is
(all of them) and one OR branch is; `X WITH exception` counts as X (an exception only
adds permissions). Ids compare case-insensitively, as SPDX specifies.
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Iterable, Optional

from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression

from phi1.errors import Phi1Error

UNKNOWN = "unknown"
"""The licence of a file without a distribution, or of a distribution declaring none we can read."""

# `License :: ` classifiers (the part after it) with no SPDX id in parentheses to read.
# The ambiguous ones (PEP 639's appendix) map to LicenseRef ids.
_CLASSIFIERS = {
    "OSI Approved :: MIT License": "MIT",
    "OSI Approved :: MIT No Attribution License (MIT-0)": "MIT-0",
    "OSI Approved :: ISC License (ISCL)": "ISC",
    "OSI Approved :: Python Software Foundation License": "PSF-2.0",
    "OSI Approved :: Zope Public License": "LicenseRef-ZPL",
    "OSI Approved :: zlib/libpng License": "Zlib",
    "OSI Approved :: University of Illinois/NCSA Open Source License": "NCSA",
    "OSI Approved :: Historical Permission Notice and Disclaimer (HPND)": "HPND",
    "OSI Approved :: The Unlicense (Unlicense)": "Unlicense",
    "OSI Approved :: Apache Software License": "LicenseRef-Apache",
    "OSI Approved :: BSD License": "LicenseRef-BSD",
    "OSI Approved :: Academic Free License (AFL)": "LicenseRef-AFL",
    "OSI Approved :: Artistic License": "LicenseRef-Artistic",
    "OSI Approved :: GNU General Public License (GPL)": "LicenseRef-GPL",
    "OSI Approved :: GNU General Public License v2 (GPLv2)": "LicenseRef-GPL-2.0",
    "OSI Approved :: GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "OSI Approved :: GNU General Public License v3 (GPLv3)": "LicenseRef-GPL-3.0",
    "OSI Approved :: GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "OSI Approved :: GNU Library or Lesser General Public License (LGPL)": "LicenseRef-LGPL",
    "OSI Approved :: GNU Lesser General Public License v2 (LGPLv2)": "LicenseRef-LGPL-2.0",
    "OSI Approved :: GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)": "LicenseRef-LGPL-3.0",
    "OSI Approved :: GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "OSI Approved :: GNU Affero General Public License v3": "LicenseRef-AGPL-3.0",
    "OSI Approved :: GNU Affero General Public License v3 or later (AGPLv3+)": "AGPL-3.0-or-later",
    "OSI Approved :: Mozilla Public License 1.1 (MPL 1.1)": "MPL-1.1",
    "OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "CC0-1.0",
    "Public Domain": "LicenseRef-Public-Domain",
}

# Free-text names, keyed by `_name_key` (lower case, letters and digits only, without
# the words license/licence/version/the).
_NAMES = {
    "mit": "MIT", "expat": "MIT", "mit0": "MIT-0",
    "apache": "LicenseRef-Apache", "apache2": "Apache-2.0", "apache20": "Apache-2.0", "asl20": "Apache-2.0",
    "apachesoftware": "LicenseRef-Apache", "apachesoftware20": "Apache-2.0",
    "bsd": "LicenseRef-BSD", "newbsd": "BSD-3-Clause", "modifiedbsd": "BSD-3-Clause", "revisedbsd": "BSD-3-Clause",
    "bsd3clause": "BSD-3-Clause", "3clausebsd": "BSD-3-Clause", "bsd3": "BSD-3-Clause",
    "simplifiedbsd": "BSD-2-Clause", "freebsd": "BSD-2-Clause", "bsd2clause": "BSD-2-Clause",
    "2clausebsd": "BSD-2-Clause", "bsd2": "BSD-2-Clause",
    "isc": "ISC", "psf": "PSF-2.0", "psf2": "PSF-2.0", "psf20": "PSF-2.0", "pythonsoftwarefoundation": "PSF-2.0",
    "mpl2": "MPL-2.0", "mpl20": "MPL-2.0", "mozillapublic20": "MPL-2.0",
    "lgpl": "LicenseRef-LGPL", "gpl": "LicenseRef-GPL", "publicdomain": "LicenseRef-Public-Domain",
    "unlicense": "Unlicense", "zlib": "Zlib", "zope": "LicenseRef-ZPL", "zpl": "LicenseRef-ZPL",
}
_NAME_NOISE = re.compile(r"\b(?:the|licen[cs]e[sd]?|version)\b|\bv(?=\d)|[^a-z0-9]")
_PAREN_ID = re.compile(r"\(([^()]+)\)\s*$")
_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def _name_key(text: str) -> str:
    return _NAME_NOISE.sub("", text.lower())


def _spdx(text: str) -> Optional[str]:
    """`text` as a canonical SPDX expression, or None."""
    try:
        return canonicalize_license_expression(text)
    except InvalidLicenseExpression:
        return None


def from_classifier(classifier: str) -> Optional[str]:
    """The SPDX id (or LicenseRef) of a licence classifier, with or without its
    `License :: ` prefix; None for one that names no licence ("OSI Approved", "Other/Proprietary")."""
    tail = classifier.strip().removeprefix("License ::").strip()
    if tail in _CLASSIFIERS:
        return _CLASSIFIERS[tail]
    m = _PAREN_ID.search(tail)  # e.g. "Eclipse Public License 2.0 (EPL-2.0)", "(BSL-1.0)"
    if m:
        spdx = _spdx(m.group(1).strip().replace(" ", "-"))
        if spdx and " " not in spdx:
            return spdx
    return None


def from_name(text: str) -> Optional[str]:
    """An SPDX expression for a free-text licence name (`License:` field), or None."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not line or len(line) > 100:
        return None
    return _spdx(line) or _NAMES.get(_name_key(line))


def declared_licence(metadata: Message) -> str:
    """A distribution's licence as an SPDX expression (see the module's docstring), or `unknown`."""
    expr = metadata.get("License-Expression")
    if expr and (spdx := _spdx(str(expr))):
        return spdx
    text = metadata.get("License")
    if text and (spdx := from_name(str(text))):
        return spdx
    found = sorted({x for c in (metadata.get_all("Classifier") or []) if c.startswith("License ::")
                    if (x := from_classifier(c))})
    if not found:
        return UNKNOWN
    return found[0] if len(found) == 1 else " OR ".join(found)


def allow_list(names: Iterable[str]) -> frozenset[str]:
    """The allowed licence ids, lower-cased, from SPDX ids, LicenseRef ids, classifier
    strings, common names or `unknown`; a name none of those is a Phi1Error naming it."""
    out = set()
    for name in names:
        text = str(name).strip()
        if text.lower() == UNKNOWN:
            out.add(UNKNOWN)
            continue
        spdx = _spdx(text) or _NAMES.get(_name_key(text)) or from_classifier(text)
        if spdx is None or len(_TOKEN.findall(spdx)) != 1:
            raise Phi1Error(f"ingest.licences: {text!r} is not one SPDX licence id, LicenseRef, classifier "
                            "or known licence name (e.g. MIT, Apache-2.0, BSD-3-Clause, LicenseRef-BSD, unknown)")
        out.add(spdx.lower())
    return frozenset(out)


def permits(expression: str, allowed: frozenset[str]) -> bool:
    """Does the allow-list permit a licence expression (canonical SPDX, or `unknown`)?"""
    if expression == UNKNOWN:
        return UNKNOWN in allowed
    tokens = _TOKEN.findall(expression)
    pos = 0

    def peek() -> Optional[str]:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def either() -> bool:  # a OR b OR ...
        ok = both()
        while peek() == "OR":
            take()
            ok = both() or ok  # evaluate every branch: the tokens must all be consumed
        return ok

    def both() -> bool:  # a AND b AND ...
        ok = one()
        while peek() == "AND":
            take()
            ok = one() and ok
        return ok

    def one() -> bool:
        tok = take()
        if tok == "(":
            ok = either()
            take()  # ")"
            return ok
        if peek() == "WITH":
            take(), take()
        return tok.lower() in allowed

    try:
        return either()
    except IndexError:  # not reached for canonical expressions
        return False


__all__ = ["UNKNOWN", "declared_licence", "allow_list", "permits", "from_classifier", "from_name"]
