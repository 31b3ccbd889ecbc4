"""@context resolution with an offline-first cache, and fast term expansion / compaction.

pyld processes each distinct @context once (protected terms, prefixes, @vocab, remote
documents through our own loader); the result is flattened into a :class:`TermMap` of
plain dicts, so expanding or compacting a name per request is a dictionary lookup.

Documents come, in order, from: the bundled core context (every published version URL
maps to the bundled v1.8 document), folders configured in ``context_preload``, contexts
stored in the database (hosted through /jsonldContexts, or fetched earlier), and finally
the network with a short timeout. A failed fetch is remembered for a while so a broken
URL fails fast on every later request too.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from cachetools import LRUCache, TTLCache
from pyld import jsonld
from sqlalchemy import Engine, delete, insert, select

from kizuna.broker.models import contexts
from kizuna.problems import Problem, bad_request, context_not_available, not_found
from kizuna.settings import Settings
from kizuna.storage import writer

CORE_CONTEXT_URL = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
CORE_CONTEXT_URLS = frozenset(
    [
        f"https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context{v}.jsonld"
        for v in ("", "-v1.3", "-v1.4", "-v1.5", "-v1.6", "-v1.7", "-v1.8")
    ]
)
NGSI_LD = "https://uri.etsi.org/ngsi-ld/"
DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
_FAILED_FETCH_MEMORY_SECONDS = 30


def _load_core() -> dict[str, Any]:
    path = resources.files("kizuna.broker") / "contexts" / "ngsi-ld-core-context-v1.8.jsonld"
    return orjson.loads(path.read_bytes())


@dataclass
class TermMap:
    """A processed @context: term <-> IRI, with memoised lookups."""

    terms: dict[str, str]
    prefixes: dict[str, str]
    vocab: str | None
    # Terms that alias JSON-LD keywords (e.g. "type" -> @type): never valid as names.
    keywords: frozenset[str]
    # The @context as the client gave it (without the core context), for responses.
    source: list[Any]
    _expanded: dict[str, str] = field(default_factory=dict, repr=False)
    _compacted: dict[str, str] = field(default_factory=dict, repr=False)
    _reverse: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # Prefer the shortest term, then the lexicographically least, as JSON-LD does.
        for term, iri in sorted(self.terms.items(), key=lambda t: (len(t[0]), t[0]), reverse=True):
            self._reverse[iri] = term

    def expand(self, term: str) -> str:
        hit = self._expanded.get(term)
        if hit is None:
            hit = self._expand(term)
            self._expanded[term] = hit
        return hit

    def _expand(self, term: str) -> str:
        if term in self.terms:
            return self.terms[term]
        prefix, colon, suffix = term.partition(":")
        if colon:
            if suffix.startswith("//") or prefix not in self.prefixes:
                return term  # an absolute IRI (http://..., urn:...)
            return self.prefixes[prefix] + suffix
        return (self.vocab or "") + term

    def compact(self, iri: str) -> str:
        hit = self._compacted.get(iri)
        if hit is None:
            hit = self._compact(iri)
            self._compacted[iri] = hit
        return hit

    def _compact(self, iri: str) -> str:
        if iri in self._reverse:
            return self._reverse[iri]
        if self.vocab and iri.startswith(self.vocab):
            suffix = iri[len(self.vocab) :]
            if suffix and ":" not in suffix and suffix not in self.terms:
                return suffix
        best = iri
        for prefix, base in self.prefixes.items():
            if iri.startswith(base) and len(iri) > len(base):
                candidate = f"{prefix}:{iri[len(base) :]}"
                if len(candidate) < len(best):
                    best = candidate
        return best


class ContextStore:
    """Loads @context documents and turns @context values into TermMaps, cached."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._timeout = settings.context_fetch_timeout
        self._fetch_enabled = settings.context_fetch_enabled
        core = _load_core()
        self._documents: dict[str, Any] = {url: core for url in CORE_CONTEXT_URLS}
        for base, folder in settings.context_preload.items():
            for path in sorted(Path(folder).glob("*.json*")):
                self._documents[base + path.name] = orjson.loads(path.read_bytes())
        self._failed: TTLCache[str, str] = TTLCache(maxsize=1000, ttl=_FAILED_FETCH_MEMORY_SECONDS)
        self._maps: LRUCache[bytes, TermMap] = LRUCache(maxsize=512)
        self._lock = threading.Lock()
        self.core = self.term_map(None)

    # --- documents ---------------------------------------------------------------

    def document(self, url: str) -> Any:
        doc = self._documents.get(url)
        if doc is not None:
            return doc
        with self._engine.connect() as conn:
            row = conn.execute(select(contexts.c.body).where(contexts.c.url == url)).first()
        if row is not None:
            self._documents[url] = row.body
            return row.body
        return self._fetch(url)

    def _fetch(self, url: str) -> Any:
        if url in self._failed:
            raise context_not_available(self._failed[url])
        if not self._fetch_enabled or not url.startswith(("http://", "https://")):
            reason = f"@context {url} is not known here and cannot be fetched"
            self._failed[url] = reason
            raise context_not_available(reason)
        # httpx (~4 MB of a process) only once an unknown @context has to be fetched.
        import httpx

        try:
            response = httpx.get(
                url,
                timeout=self._timeout,
                follow_redirects=True,
                headers={"Accept": "application/ld+json, application/json"},
            )
            response.raise_for_status()
            body = orjson.loads(response.content)
            if not isinstance(body, dict) or "@context" not in body:
                raise ValueError("the document has no @context member")
        except (httpx.HTTPError, ValueError) as exc:
            reason = f"@context {url} could not be retrieved: {exc}"
            self._failed[url] = reason
            raise context_not_available(reason) from None
        self._store(url, "cached", body)
        return body

    def _store(self, url: str, kind: str, body: Any) -> None:
        with writer(self._engine).begin() as conn:
            conn.execute(delete(contexts).where(contexts.c.url == url))
            conn.execute(
                insert(contexts).values(url=url, kind=kind, body=body, created_at=datetime.now(UTC))
            )
        self._documents[url] = body

    def _loader(self, url: str, options: Any = None) -> dict[str, Any]:
        return {"contextUrl": None, "documentUrl": url, "document": self.document(url)}

    # --- processing --------------------------------------------------------------

    def cached(self, context: Any) -> TermMap | None:
        """The TermMap for ``context`` if it was processed before, without any I/O."""
        return self._maps.get(orjson.dumps(context))

    def term_map(self, context: Any) -> TermMap:
        """The TermMap for a client @context (None, a URL, an object or a list of them)."""
        key = orjson.dumps(context)
        hit = self._maps.get(key)
        if hit is not None:
            return hit
        source = [] if context is None else (context if isinstance(context, list) else [context])
        for item in source:
            if not isinstance(item, str | dict):
                raise bad_request("@context entries must be URLs or objects")
        processor = jsonld.JsonLdProcessor()
        options = {"documentLoader": self._loader, "base": ""}
        try:
            active = processor.process_context(
                processor._get_initial_context(options),
                [*source, CORE_CONTEXT_URL],
                options,
            )
        except jsonld.JsonLdError as exc:
            problem = _find_problem(exc)
            if problem is not None:
                raise problem from None
            raise bad_request(f"Invalid @context: {exc}") from None
        terms: dict[str, str] = {}
        prefixes: dict[str, str] = {}
        keywords: set[str] = set()
        for term, definition in active["mappings"].items():
            iri = definition.get("@id") if definition else None
            if not iri or iri.startswith("@"):
                keywords.add(term)
                continue
            terms[term] = iri
            if definition.get("_prefix") or iri.endswith(("/", "#", ":")):
                prefixes[term] = iri
        result = TermMap(terms, prefixes, active.get("@vocab"), frozenset(keywords), source)
        with self._lock:
            self._maps[key] = result
        return result

    # --- /jsonldContexts -----------------------------------------------------------

    def host(self, body: Any) -> str:
        if not isinstance(body, dict) or "@context" not in body:
            raise bad_request("A hosted @context must be a JSON object with a @context member")
        self.term_map(body["@context"])  # reject what cannot be processed
        url = f"urn:kizuna:context:{uuid.uuid4()}"
        self._store(url, "hosted", body)
        return url

    def listing(self, kind: str | None) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(contexts.c.url, contexts.c.kind, contexts.c.created_at)
            ).all()
        items = [
            {"url": r.url, "kind": r.kind.capitalize(), "createdAt": r.created_at} for r in rows
        ]
        items.append({"url": CORE_CONTEXT_URL, "kind": "Cached", "createdAt": None})
        if kind:
            items = [i for i in items if i["kind"].lower() == kind.lower()]
        return items

    def stored(self, url: str) -> Any:
        if url in CORE_CONTEXT_URLS:
            return self._documents[url]
        with self._engine.connect() as conn:
            row = conn.execute(select(contexts.c.body).where(contexts.c.url == url)).first()
        if row is None:
            raise not_found(f"No @context {url} is stored here")
        return row.body

    def remove(self, url: str) -> None:
        if url in CORE_CONTEXT_URLS:
            raise bad_request("The core @context cannot be deleted")
        with writer(self._engine).begin() as conn:
            gone = conn.execute(delete(contexts).where(contexts.c.url == url)).rowcount
        if not gone:
            raise not_found(f"No @context {url} is stored here")
        self._documents.pop(url, None)
        with self._lock:
            self._maps.clear()


def _find_problem(exc: BaseException) -> Problem | None:
    """pyld wraps our loader's Problem several levels deep; dig it out."""
    seen = 0
    current: Any = exc
    while current is not None and seen < 10:
        if isinstance(current, Problem):
            return current
        details = getattr(current, "details", None) or {}
        nested = details.get("cause") if isinstance(details, dict) else None
        current = getattr(current, "cause", None) or nested or current.__cause__
        seen += 1
    return None
