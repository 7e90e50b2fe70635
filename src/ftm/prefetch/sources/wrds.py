"""WRDS: Capital IQ earnings-call transcripts, linked to GVKEY and CRSP PERMNO as of the call date.

One `wrds.Connection` serves the whole run (WRDS asks for a Duo approval on every new connection),
first for the quarter's calls (`wrds_calls.sql`), then for the chosen transcripts' components, a
few hundred transcripts per query (`wrds_components.sql`), so that each query stays short and
memory holds one batch. If the connection drops, the source reconnects once and repeats the query
it lost; a second drop ends the run, and `prefetch` resumes from its checkpoint.

The `wrds` package's own `connect()` is not used: on a failure it swallows the error, retries
against the real WRDS host and then prompts for a user name and password on stdin. ftm makes a
single attempt at the host in the settings and turns a refusal into a clear error (exit code 4).
The SQL and its reasons are in the `.sql` files beside this module; docs/architecture.md (*WRDS*) sums up
what ftm reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

from ftm.errors import FtmError, SettingsError
from ftm.prefetch.sources import MAX_LISTED_PROBLEMS, Call, CallList, Component, Notify
from ftm.quarters import Quarter
from ftm.schemas import InputProblem
from ftm.settings import SourceSettings, WrdsSettings

EARNINGS_CALLS = 48  # keydeveventtypeid of "Earnings Calls"
APPLICATION_NAME = "ftm"  # shows in pg_stat_activity, so an administrator can tell ftm's session
VERSION_RULE = "Final first, then latest transcriptcreationdate_utc and time, then highest transcriptid"
# Seconds to reach the host at all; the login itself may wait much longer for a Duo approval.
REACH_TIMEOUT_S = 10


def _sql(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def speaker_type(component_type: str | None, speaker: str | None) -> str:
    """`speaker_type` from the lookup tables' names, never from their ids (which WRDS does not document)."""
    component = (component_type or "").strip().lower()
    if "operator" in component or (speaker or "").strip().lower() == "operator":
        return "operator"
    return {"presenter speech": "presenter", "question": "question", "answer": "answer"}.get(
        component, "unknown"
    )


class WrdsSource:
    """The `Source` of `ftm.prefetch.sources` over WRDS's PostgreSQL server."""

    def __init__(self, settings: SourceSettings, notify: Notify | None = None):
        self.settings = settings.wrds
        self.notify = notify or (lambda event, message: None)
        self._db: Any = None
        self._reconnects_left = 1

    # --- the Source protocol -----------------------------------------------------------------

    def calls(self, quarter: Quarter) -> CallList:
        frame = self._query(
            _sql("wrds_calls.sql"),
            params={"start": quarter.start.isoformat(), "end": quarter.end.isoformat()},
            date_cols=["mostimportantdateutc"],
        )
        found: list[Call] = []
        problems: list[InputProblem] = []
        for row in frame.itertuples(index=False):
            try:
                found.append(_call(row))
            except ValueError as error:
                problems.append(
                    InputProblem(
                        where=f"companyid {row.companyid}, keydevid {row.keydevid}", reason=str(error)
                    )
                )
        required = self.settings.link_required
        calls = [c for c in found if required == "none" or getattr(c, required) is not None]
        firms = {c.firm_id for c in found}
        description = {
            "kind": "wrds",
            "host": self.settings.host,
            "dbname": self.settings.dbname,
            "event_type": f"keydeveventtypeid = {EARNINGS_CALLS} (Earnings Calls)",
            "call_date_range": {
                "column": "mostimportantdateutc",
                "timezone": "UTC",
                "start": quarter.start.isoformat(),
                "end": quarter.end.isoformat(),
                "half_open": True,
            },
            "version_rule": VERSION_RULE,
            "link_rule": {
                "gvkey": "ciq.wrds_gvkey with the call date inside [startdate, enddate]",
                "permno": "crsp.ccmxpf_lnkhist, linktype LU/LC, linkprim P/C, call date inside the "
                "link range; P before C",
                "required": required,
            },
            "n_calls_found": len(found),
            "n_firms_found": len(firms),
            "n_firms_without_gvkey": len(firms - {c.firm_id for c in found if c.gvkey}),
            "n_firms_without_permno": len(firms - {c.firm_id for c in found if c.permno is not None}),
            "n_calls_dropped_unlinked": len(found) - len(calls),
        }
        return CallList(
            calls, description, problems[:MAX_LISTED_PROBLEMS], len(problems), n_records=len(frame)
        )

    def components(self, calls: Sequence[Call]) -> Iterator[tuple[Call, list[Component]]]:
        size = self.settings.transcripts_per_query
        for start in range(0, len(calls), size):
            batch = calls[start : start + size]
            frame = self._query(
                _sql("wrds_components.sql"), params={"transcriptids": [int(c.transcript_id) for c in batch]}
            )
            turns: dict[str, list[Component]] = {c.transcript_id: [] for c in batch}
            for row in frame.itertuples(index=False):
                turn = turns[str(row.transcriptid)]
                # The place in the query's order, not componentorder itself: WRDS declares no
                # keys, and a repeated or missing componentorder would repeat sentence ids.
                turn.append(
                    Component(
                        order=len(turn),
                        speaker_type=speaker_type(_text(row.componenttype), _text(row.speakertype)),
                        text=_text(row.componenttext) or "",
                    )
                )
            for call in batch:
                yield call, turns[call.transcript_id]

    def count_components(self, calls: Sequence[Call]) -> int:
        ids = [int(c.transcript_id) for c in calls]
        size = self.settings.transcripts_per_query
        total = 0
        for start in range(0, len(ids), size):
            frame = self._query(
                _sql("wrds_component_counts.sql"), params={"transcriptids": ids[start : start + size]}
            )
            total += int(frame["n_components"].iloc[0])
        return total

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            # Closing a dead connection can fail too; that must not hide the error that killed it.
            with contextlib.suppress(Exception):
                db.close()

    # --- connection --------------------------------------------------------------------------

    def _query(self, sql: str, **kwargs: Any) -> Any:
        """Runs one query through `wrds.Connection.raw_sql`, reconnecting once if the link dropped."""
        if self._db is None:
            self._db = self._connect("connecting")
        try:
            return self._db.raw_sql(sql, **kwargs)
        except Exception as error:
            if not _is_disconnect(error):
                raise
            self.close()
            if self._reconnects_left == 0:
                raise FtmError(
                    "the connection to WRDS dropped again after a reconnect; everything up to the "
                    "last checkpoint is saved: run the same command to resume"
                ) from None
            self._reconnects_left -= 1
            self._db = self._connect("reconnecting")
            return self._db.raw_sql(sql, **kwargs)

    def _connect(self, event: str) -> Any:
        try:
            import wrds
        except ImportError:
            raise SettingsError("the WRDS source needs the wrds package: pip install 'ftm[wrds]'") from None
        import sqlalchemy.exc

        s = self.settings
        username, password = _credentials(s)
        where = f"{s.host}:{s.port}"
        _check_reachable(s)
        if event == "connecting":
            message = f"connecting to WRDS at {where} as {username}: approve the Duo push on your phone"
        else:
            message = (
                f"the connection to WRDS dropped; reconnecting to {where} as {username}: "
                "approve the new Duo push if one comes"
            )
        self.notify(event, message)
        db = wrds.Connection(
            autoconnect=False,
            wrds_hostname=s.host,
            wrds_port=s.port,
            wrds_dbname=s.dbname,
            wrds_username=username,
            wrds_password=password or "",  # empty: libpq reads PGPASSWORD, then ~/.pgpass
            wrds_connect_args={
                "sslmode": s.sslmode,
                "application_name": APPLICATION_NAME,
                "connect_timeout": int(s.login_timeout_s),
                # WRDS drops idle links; keepalives let a long preprocessing pause survive.
                "keepalives": 1,
                "keepalives_idle": 60,
                "keepalives_interval": 10,
                "keepalives_count": 6,
            },
        )
        try:
            # The package's single attempt, without connect()'s fallback host and prompts.
            db._Connection__make_sa_engine_conn(raise_err=True)
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise SettingsError(_login_failure(error, username, where)) from None
        self.notify("connected", f"connected to WRDS at {where}")
        return db


def _call(row: Any) -> Call:
    """A call from a row of wrds_calls.sql, checked: a ValueError says what is wrong with it."""
    if _missing(row.transcriptid):
        raise ValueError("the chosen version has no transcriptid")
    gvkey = _text(row.gvkey)
    if gvkey is not None:
        gvkey = gvkey.strip()
        if not gvkey.isdigit() or len(gvkey) > 6:
            raise ValueError(f"GVKEY {gvkey!r} is not up to six digits")
        gvkey = gvkey.zfill(6)  # some WRDS exports drop the leading zeros
    call_date = row.mostimportantdateutc
    return Call(
        firm_id=str(int(row.companyid)),
        firm_name=_text(row.companyname),
        transcript_id=str(int(row.transcriptid)),
        call_date=None if _missing(call_date) else call_date.date(),
        permno=None if _missing(row.permno) else int(row.permno),
        gvkey=gvkey,
        collection_type=_text(row.transcriptcollectiontypename),
    )


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def _credentials(settings: WrdsSettings) -> tuple[str, str | None]:
    """The user name and password: an AWS Secrets Manager secret when one is named; else the
    settings (FTM_SOURCE__WRDS__PASSWORD) or PGUSER, with the password left to libpq (PGPASSWORD,
    then ~/.pgpass) when none is set."""
    if settings.aws_secret:
        return _secret_credentials(settings.aws_secret)
    username = settings.username or os.environ.get("PGUSER")
    if not username:
        raise SettingsError(
            "no WRDS user name: set source.wrds.username in ftm.toml (or FTM_SOURCE__WRDS__USERNAME "
            "or PGUSER); the password comes from ~/.pgpass, PGPASSWORD or FTM_SOURCE__WRDS__PASSWORD"
        )
    password = settings.password.get_secret_value() if settings.password else None
    return username, password


def _secret_credentials(secret_id: str) -> tuple[str, str]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        reply = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except (BotoCoreError, ClientError) as error:
        raise SettingsError(f"could not read the AWS Secrets Manager secret {secret_id!r}: {error}") from None
    try:
        value = json.loads(reply.get("SecretString") or "")
        return str(value["username"]), str(value["password"])
    except (ValueError, KeyError, TypeError):
        raise SettingsError(
            f"the AWS Secrets Manager secret {secret_id!r} must be JSON with username and password"
        ) from None


def _check_reachable(settings: WrdsSettings) -> None:
    """Fails within seconds when nothing answers at host:port, before the login (which may wait
    a minute for a Duo approval) begins. It opens and closes a TCP socket; no login, no Duo."""
    try:
        socket.create_connection((settings.host, settings.port), timeout=REACH_TIMEOUT_S).close()
    except OSError as error:
        raise SettingsError(
            f"cannot reach WRDS at {settings.host}:{settings.port} ({error}): check "
            "source.wrds.host and source.wrds.port, your network, and that WRDS allows your IP"
        ) from None


def _login_failure(error: Exception, username: str, where: str) -> str:
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    lowered = reason.lower()
    if "password" in lowered or "authentication" in lowered or "no pg_hba" in lowered:
        hint = (
            "check the user name and the password (FTM_SOURCE__WRDS__PASSWORD, PGPASSWORD or "
            "~/.pgpass), and approve the Duo push when it comes"
        )
    elif "timeout" in lowered:
        hint = "the login timed out: approve the Duo push sooner, or raise source.wrds.login_timeout_s"
    else:
        hint = "check source.wrds.host, port and dbname"
    return f"WRDS at {where} refused the login of {username}: {reason}. {hint}"


def _is_disconnect(error: Exception) -> bool:
    """Whether a query failed because the link to the server is gone (then a reconnect may help)."""
    import sqlalchemy.exc

    if isinstance(error, sqlalchemy.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig or error
    import psycopg2

    return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))
