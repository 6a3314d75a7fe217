"""`kiln serve`: run the autotuning cache service with uvicorn."""

from __future__ import annotations

from compiler.cli import err_console, fail


def run_serve(db_url: str | None, host: str, port: int, token: str | None, log_level: str) -> None:
    import uvicorn

    from compiler.service.app import create_app
    from compiler.service.config import ServiceConfig, default_db_url
    from compiler.service.db import UnsupportedDatabase

    config = ServiceConfig(
        db_url=db_url or default_db_url(), host=host, port=port, token=token or None
    )
    try:
        app = create_app(config)
    except UnsupportedDatabase as err:
        fail(str(err))
    except Exception as err:  # the database refused: a user error (bad host, password, path)
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        fail(f"cannot open database {_redacted(config.db_url)}: {reason}")
    err_console.print(
        f"kiln cache service on http://{host}:{port} (docs at /docs), "
        f"database {_redacted(config.db_url)}, "
        f"writes {'need the token' if config.token else 'open to all'}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    # Access logs off: one line per request costs more than the request on loopback.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url
