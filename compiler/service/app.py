"""The routes of the autotuning cache service (`kiln serve`); OpenAPI docs at /docs.

    GET  /v1/health                         liveness, the database, its durability settings
    GET  /v1/auth                           200 when this request's token may write, else 401
    GET  /v1/records/{key}                  the best record for a kernel key, or 404
    PUT  /v1/records/{key}                  store a measured record; the fastest one wins
    GET  /v1/records?target=...&limit=...   the most recently improved records
    GET  /v1/stats                          records per target, hits, misses, writes

With a token, PUT needs `Authorization: Bearer TOKEN` (401 otherwise); reads stay open,
since a cached configuration is no secret and every compile on the team reads them.
Bodies over the limit get 413 (FastAPI checks Content-Length and counts the bytes that
actually arrive); malformed keys, JSON or records get 422 with pydantic's message.
Routes are plain `def`: they run in the threadpool, where the database calls block.
"""

from __future__ import annotations

import hmac
import threading
import time
from importlib.metadata import version

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from compiler.service import db
from compiler.service.config import ServiceConfig
from compiler.service.models import (
    KEY_PATTERN,
    Health,
    PutResult,
    Record,
    RecordIn,
    RecordList,
    Stats,
)

KeyPath = Path(
    ..., pattern=KEY_PATTERN, description="kernel key (`ir.hashing.kernel_key`): 64 lowercase hex"
)


class Counters:
    """Hits, misses and writes since the server started (kept in memory: reads stay reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = {"hits": 0, "misses": 0, "writes": 0, "improvements": 0}
        self.started = time.monotonic()

    def add(self, name: str) -> None:
        with self._lock:
            self.values[name] += 1


def create_app(config: ServiceConfig, engine: Engine | None = None) -> FastAPI:
    """The FastAPI app over `config.db_url` (or a given engine); creates the schema."""
    engine = engine or db.make_engine(config.db_url)
    db.create_schema(engine)
    counters = Counters()
    require_token = _token_check(config.token)
    app = FastAPI(
        title="Kiln autotuning cache",
        version=_kiln_version(),
        summary="Best measured configuration per kernel key, shared by every compile on a team.",
        max_body_size=config.max_body_bytes,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.state.engine = engine
    app.state.counters = counters

    @app.get("/v1/health", response_model=Health)
    def health() -> Health:
        try:
            settings = db.durability(engine)  # one query also proves the database answers
        except Exception as err:  # the service is up but useless: say so with 503
            raise HTTPException(503, f"database unreachable: {type(err).__name__}") from None
        return Health(status="ok", database=engine.dialect.name, version=_kiln_version(), durability=settings)

    @app.get(
        "/v1/auth",
        dependencies=[Depends(require_token)],
        responses={401: {"description": "missing or wrong token"}},
    )
    def auth() -> dict[str, bool]:
        """A write's credentials checked without writing: `kiln tune` asks before measuring."""
        return {"writes": True}

    @app.get(
        "/v1/records/{key}", response_model=Record, responses={404: {"description": "no record"}}
    )
    def get_record(key: str = KeyPath) -> Record:
        row = db.get(engine, key)
        if row is None:
            counters.add("misses")
            raise HTTPException(404, f"no record for key {key}")
        counters.add("hits")
        return Record(**row)

    @app.put(
        "/v1/records/{key}",
        response_model=PutResult,
        dependencies=[Depends(require_token)],
        responses={
            401: {"description": "missing or wrong token"},
            413: {"description": "body too large"},
        },
    )
    def put_record(body: RecordIn, key: str = KeyPath) -> PutResult:
        improved, best = db.upsert(engine, key, body.model_dump())
        counters.add("writes")
        if improved:
            counters.add("improvements")
        return PutResult(improved=improved, record=Record(**best))

    @app.get("/v1/records", response_model=RecordList)
    def list_records(
        target: str | None = Query(None, max_length=256, description="only this target"),
        limit: int = Query(100, ge=1, le=1000),
    ) -> RecordList:
        return RecordList(records=[Record(**row) for row in db.list_records(engine, target, limit)])

    @app.get("/v1/stats", response_model=Stats)
    def stats() -> Stats:
        targets = db.count_by_target(engine)
        return Stats(
            records=sum(targets.values()),
            targets=targets,
            uptime_s=time.monotonic() - counters.started,
            **counters.values,
        )

    return app


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each problem; the offending input is left out (it may be NaN, or huge)."""
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


def _token_check(token: str | None):
    bearer = HTTPBearer(auto_error=False, description="the token given to `kiln serve --token`")

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if credentials is None or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401,
                "writes need 'Authorization: Bearer <token>' with the server's token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_token


def _kiln_version() -> str:
    try:
        return version("kiln")
    except Exception:
        return "unknown"
