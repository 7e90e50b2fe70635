"""A throw-away PostgreSQL 15 server that stands in for WRDS, seeded with one quarter of earnings calls.

`WrdsServer.start(corpus)` creates a cluster in a fresh folder under /tmp, turns on SSL with a
self-signed certificate (the `wrds` package connects with `sslmode=require`), listens on a free
port of 127.0.0.1 only, creates the tables of `wrds_fixture.sql` (reference §3) and fills them.

The seed is calendar quarter 2016Q4. Real MAEC text from the shared corpus becomes Capital IQ
calls: the first 30 tickers with a MAEC call in the quarter, plus one extra company per special
case of reference §3 ("Seed rows that make the tests honest"), whose text comes from 2017Q1 MAEC
calls. `WrdsServer.seed` says what a correct reader must find: every earnings call of the quarter
with the version to choose and its GVKEY and PERMNO as of the call date, the transcripts that must
never be chosen, and which company carries which case.

Reference: the team's WRDS notes, outside this repository (§3 DDL and seed rows, §4 code
values, §5 version rule, §7 the `wrds` package and the fixture set-up).
"""

from __future__ import annotations

import atexit
import gzip
import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extras import execute_values

DDL = Path(__file__).with_name("wrds_fixture.sql")

QUARTER = "2016Q4"
QUARTER_START = date(2016, 10, 1)
QUARTER_END = date(2017, 1, 1)  # exclusive
# Text for the special cases comes from the next quarter's calls, so no corpus call of the seeded
# quarter is used twice.
DONOR_START = date(2017, 1, 1)
DONOR_END = date(2017, 4, 1)
N_CORPUS_FIRMS = 30

# Markers that tests can look for in what a reader returns.
OPERATOR_MARKER = "OPERATOR-MARKER please stand by"
LONG_COMPONENT_END_MARKER = "LONG-COMPONENT-END-MARKER"
LONG_COMPONENT_MIN_CHARS = 40_000
EXCEL_CELL_LIMIT = 32_767  # one CIQ export was cut here (reference §6, pitfall 2)
VERSION_MARKERS = {7: "VERSION-7-MARKER", 2: "VERSION-2-MARKER", 1: "VERSION-1-MARKER"}
PRELIMINARY_MARKER = "PRELIMINARY-MARKER"
TIE_LOWER_MARKER = "TIE-LOWER-ID-MARKER"
TIE_HIGHER_MARKER = "TIE-HIGHER-ID-MARKER"
NON_EARNINGS_MARKER = "NON-EARNINGS-MARKER"

# Code values of reference §4.
COMPONENT_TYPES = {
    1: "Presentation Operator Message",
    2: "Presenter Speech",
    3: "Question",
    4: "Answer",
    7: "Question and Answer Operator Message",
    8: "Unknown Question and Answer Message",
}
SPEAKER_TYPES = {1: "Operator", 2: "Executives", 3: "Analysts"}
COLLECTION_TYPES = {1: "Proofed Copy", 2: "Edited Copy", 7: "Spellchecked Copy", 8: "Audited Copy"}
PRESENTATION_TYPES = {5: "Final", 6: "Preliminary"}
EVENT_TYPES = {48: "Earnings Calls", 49: "Guidance/Update Calls"}
EARNINGS, GUIDANCE = 48, 49
FINAL, PRELIMINARY = 5, 6
PROOFED, EDITED, SPELLCHECKED = 1, 2, 7
OPERATOR_TURN, PRESENTER, QUESTION, ANSWER, QA_OPERATOR_TURN = 1, 2, 3, 4, 7
OPERATOR, EXECUTIVE, ANALYST = 1, 2, 3

BIG_COMPANYID = 2_500_000_000  # above 2**31: real CIQ ids already reach ~1.86e9

# Each case company: (case key, made-up ticker). Its companyid is 200000 + 10 * position.
CASES = [
    ("three_versions", "ZVER"),
    ("version_tie", "ZTIE"),
    ("non_earnings", "ZNEC"),
    ("no_gvkey", "ZNOG"),
    ("gvkey_ranges", "ZGVR"),
    ("p_and_c", "ZPAC"),
    ("open_link", "ZOPL"),
    ("nr_link", "ZNRL"),
    ("blank_components", "ZBLK"),
    ("long_component", "ZLNG"),
    ("crlf", "ZCRL"),
    ("late_call", "ZLTE"),
    ("after_quarter", "ZAFT"),  # its only call is just after the quarter: not expected
    ("before_quarter", "ZBEF"),  # its only call is just before the quarter: not expected
    ("big_companyid", "ZBIG"),
    ("two_calls", "ZTWO"),
]


@dataclass(frozen=True)
class ExpectedCall:
    companyid: int
    keydevid: int
    transcriptid: int  # the version ftm must choose
    call_date: date  # mostimportantdateutc
    company_name: str
    ticker: str  # corpus ticker (or a made-up one for synthetic cases)
    gvkey: str | None  # expected as of the call date, six-digit text
    permno: int | None  # expected as of the call date
    collection_type: str  # transcriptcollectiontypename of the chosen version
    n_components: int  # components of the chosen transcript, operator turns included
    n_blank: int  # of which NULL or blank text
    n_operator: int  # of which operator turns


@dataclass(frozen=True)
class WrdsSeed:
    quarter: str  # "2016Q4"
    calls: list[ExpectedCall]  # every earnings call of the quarter, one per (companyid, keydevid)
    excluded_transcript_ids: frozenset[int]  # present in the tables but must never be chosen
    case: dict[str, int]  # case key -> companyid
    n_components_total: int  # components of all chosen transcripts


class WrdsServer:
    """A started, seeded PostgreSQL server; make one with `WrdsServer.start(corpus)`, end with `stop()`."""

    host = "127.0.0.1"
    dbname = "wrds"
    user = "ftm_reader"
    password = "correct-horse"
    seed: WrdsSeed  # set by start()

    def __init__(self) -> None:
        self.port = 0
        self._base: Path | None = None
        self._data = Path()
        # A forked child (a test's worker process) inherits the atexit hook: only the process
        # that started the server may stop it.
        self._owner = os.getpid()

    @classmethod
    def start(cls, corpus: Path | str) -> WrdsServer:
        server = cls()
        # Registered before anything starts, so an interrupted session leaves no server behind.
        atexit.register(server.stop)
        try:
            server._start_postgres()
            server.seed = server._load_seed(Path(corpus))
        except BaseException:
            server.stop()
            raise
        return server

    def wrds_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `wrds.Connection` for this server, as the ftm_reader login."""
        return {
            "wrds_hostname": self.host,
            "wrds_port": self.port,
            "wrds_dbname": self.dbname,
            "wrds_username": self.user,
            "wrds_password": self.password,
        }

    def admin_execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[tuple]:
        """Run one statement as the superuser over the unix socket (autocommit); its rows, if any."""
        connection = self._admin_connection(self.dbname)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description is not None else []
        finally:
            connection.close()

    def terminate(self, application_name: str) -> int:
        """Kill the sessions with this application_name, as a dropped connection; how many were killed."""
        rows = self.admin_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        )
        return sum(1 for (killed,) in rows if killed)

    def stop(self) -> None:
        """Stop the server at once (nothing in it is worth a clean shutdown) and delete its folder."""
        if os.getpid() != self._owner or self._base is None:
            return
        base, self._base = self._base, None
        atexit.unregister(self.stop)
        if (self._data / "postmaster.pid").exists():
            _run_pg(["pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop"], cwd=base)
        shutil.rmtree(base, ignore_errors=True)

    # --- start-up ------------------------------------------------------------------------------

    def _start_postgres(self) -> None:
        # PostgreSQL refuses to run as root, and the postgres user must reach the folder, so it
        # lives directly under /tmp (pytest's own tmp folders are 0700 root); a short path also
        # keeps the unix socket's path under its 107-character limit.
        self._base = Path(
            tempfile.mkdtemp(prefix="ftm-wrds-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
        )
        if os.geteuid() == 0:
            shutil.chown(self._base, "postgres", "postgres")
        self._data = self._base / "data"
        _check(
            _run_pg(
                ["initdb", "-D", str(self._data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
                + ["--locale=C", "--no-sync", "--no-instructions"],
                cwd=self._base,
            ),
            "initdb",
        )
        # Made by the server user, so the key already has the owner PostgreSQL insists on.
        cert, key = self._base / "server.crt", self._base / "server.key"
        _check(
            _run_pg(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"]
                + ["-days", "2", "-keyout", str(key), "-out", str(cert)],
                cwd=self._base,
            ),
            "openssl",
        )
        key.chmod(0o600)
        with (self._data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                "\n# ftm test fixture\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self._data}'\n"
                "ssl = on\n"
                f"ssl_cert_file = '{cert}'\n"
                f"ssl_key_file = '{key}'\n"
                "password_encryption = 'scram-sha-256'\n"
                # A throw-away cluster: durability only costs start-up and seeding time.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 50\n"
            )
        # Only these two ways in: the superuser over the socket, and ftm_reader over TLS with a
        # password, so a wrong password or a plain-text connection is refused.
        (self._data / "pg_hba.conf").write_text(
            "local   all   postgres                  trust\n"
            "hostssl wrds  ftm_reader  127.0.0.1/32  scram-sha-256\n",
            encoding="utf-8",
        )
        log = self._base / "server.log"
        for _attempt in range(3):
            # The port is free when chosen but may be taken before the server binds it: retry.
            self.port = _free_port()
            result = _run_pg(
                ["pg_ctl", "-D", str(self._data), "-l", str(log), "-w", "-t", "30"]
                + ["-o", f"-p {self.port}", "start"],
                cwd=self._base,
            )
            if result.returncode == 0:
                return
            if "could not bind" not in _tail(log):
                break
        raise RuntimeError(f"the WRDS fixture server did not start:\n{result.stderr}\n{_tail(log)}")

    def _admin_connection(self, dbname: str) -> Any:
        # Explicit settings throughout, so no PG* variable of the caller's environment applies.
        return psycopg2.connect(
            host=str(self._data),
            port=self.port,
            user="postgres",
            dbname=dbname,
            sslmode="disable",
            connect_timeout=10,
        )

    def _load_seed(self, corpus: Path) -> WrdsSeed:
        builder = _SeedBuilder()
        firms, donors = _read_corpus(corpus)
        _seed_corpus_calls(builder, firms)
        _seed_cases(builder, donors)

        bootstrap = self._admin_connection("postgres")
        try:
            bootstrap.autocommit = True
            with bootstrap.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {self.dbname}")
                cursor.execute(f"CREATE ROLE {self.user} LOGIN PASSWORD %s", (self.password,))
        finally:
            bootstrap.close()

        connection = self._admin_connection(self.dbname)
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(DDL.read_text(encoding="utf-8"))
                builder.insert(cursor)
                schemas = "ciq_transcripts, ciq_common, crsp_a_ccm, ciq, crsp"
                cursor.execute(f"GRANT USAGE ON SCHEMA {schemas} TO {self.user}")
                cursor.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schemas} TO {self.user}")
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        finally:
            connection.close()
        return builder.seed()


def _run_pg(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a server-side program as the server user: as postgres when we are root, else as ourselves."""
    program = shutil.which(args[0])
    if program is None:
        raise RuntimeError(f"{args[0]} is not on PATH; the WRDS fixture needs PostgreSQL 15 and openssl")
    command = [program, *args[1:]]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    # The caller's PG* variables (PGPORT, PGDATA, ...) must not change what the fixture runs.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")


def _tail(log: Path, n: int = 30) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except OSError:
        return "(no server log)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the corpus ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CorpusCall:
    ticker: str
    company_name: str
    call_date: date
    texts: list[str]


def _read_corpus(path: Path, n_donors: int = 24) -> tuple[list[_CorpusCall], list[_CorpusCall]]:
    """The quarter's MAEC calls of the first N_CORPUS_FIRMS tickers, and 2017Q1 calls to lend text.

    The file is sorted by ticker, so reading stops soon after the last wanted ticker instead of
    decompressing the whole corpus.
    """
    firms: list[_CorpusCall] = []
    donors: list[_CorpusCall] = []
    tickers: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["source"] != "MAEC":
                continue
            ticker = record["ticker"]
            if len(tickers) == N_CORPUS_FIRMS and ticker > tickers[-1] and len(donors) >= n_donors:
                break
            call = _CorpusCall(
                ticker=ticker,
                company_name=record["company_name"],
                call_date=date.fromisoformat(record["call_date"]),
                texts=[component["text"] for component in record["components"]],
            )
            if QUARTER_START <= call.call_date < QUARTER_END:
                if ticker not in tickers:
                    if len(tickers) == N_CORPUS_FIRMS:
                        continue
                    tickers.append(ticker)
                firms.append(call)
            elif (
                DONOR_START <= call.call_date < DONOR_END and len(call.texts) >= 6 and len(donors) < n_donors
            ):
                donors.append(call)
    if len(tickers) < N_CORPUS_FIRMS or len(donors) < n_donors:
        raise RuntimeError(f"{path} has too few MAEC calls in {QUARTER} or 2017Q1 for the WRDS fixture")
    firms.sort(key=lambda call: (call.ticker, call.call_date))
    return firms, donors


# --- building the rows -----------------------------------------------------------------------------

# A speaker turn: (transcriptcomponenttypeid, speakertypeid, componenttext).
Turn = tuple[int, int, str | None]


def _turns(texts: Sequence[str]) -> list[Turn]:
    """A call's turns from corpus text: operator, prepared remarks, then alternating questions and answers.

    MAEC has only executives' words with no section marks, so the roles are made up: the first
    half is presenter speech and the rest alternates question/answer. The operator turns carry
    OPERATOR_MARKER, so a test can check that they were dropped.
    """
    n_presented = (len(texts) + 1) // 2
    turns: list[Turn] = [
        (OPERATOR_TURN, OPERATOR, f"Good day, ladies and gentlemen. {OPERATOR_MARKER}, the call will begin.")
    ]
    turns += [(PRESENTER, EXECUTIVE, text) for text in texts[:n_presented]]
    rest = texts[n_presented:]
    if rest:
        turns.append((QA_OPERATOR_TURN, OPERATOR, f"{OPERATOR_MARKER} for the first question."))
    for k, text in enumerate(rest):
        turns.append((QUESTION, ANALYST, text) if k % 2 == 0 else (ANSWER, EXECUTIVE, text))
    return turns


def _with_marker(turns: list[Turn], marker: str) -> list[Turn]:
    """The same turns with a marker sentence added to the first presenter turn: a version's own text."""
    marked = list(turns)
    for i, (component_type, speaker, text) in enumerate(marked):
        if component_type == PRESENTER:
            marked[i] = (component_type, speaker, f"{text} {marker} this sentence is in one version only.")
            return marked
    raise ValueError("no presenter turn to mark")


@dataclass(frozen=True)
class _Spec:
    """One transcript version of an event, as the seed plans it."""

    created: datetime  # transcriptcreationdate_utc and time
    collection: int = PROOFED
    presentation: int = FINAL
    marker: str | None = None  # a sentence only this version has
    transcriptid: int | None = None  # when the id must not follow creation order


@dataclass
class _SeedBuilder:
    """Collects the rows of every table, and what a correct reader must find."""

    detail: list[tuple] = field(default_factory=list)
    transcript: list[tuple] = field(default_factory=list)
    person: list[tuple] = field(default_factory=list)
    component: list[tuple] = field(default_factory=list)
    wrds_person: list[tuple] = field(default_factory=list)
    gvkey: list[tuple] = field(default_factory=list)
    ticker: list[tuple] = field(default_factory=list)
    lnkhist: list[tuple] = field(default_factory=list)
    calls: list[ExpectedCall] = field(default_factory=list)
    excluded: set[int] = field(default_factory=set)
    case: dict[str, int] = field(default_factory=dict)
    _keydevids: Iterator[int] = field(default_factory=lambda: itertools.count(500_001))
    _transcriptids: Iterator[int] = field(default_factory=lambda: itertools.count(700_001))
    _componentids: Iterator[int] = field(default_factory=lambda: itertools.count(9_000_001))
    _personids: Iterator[int] = field(default_factory=lambda: itertools.count(3_000_001))
    _proids: Iterator[int] = field(default_factory=lambda: itertools.count(40_001))

    def company(self, companyid: int, name: str, ticker: str) -> None:
        self.ticker.append((companyid, name, ticker, None, None))

    def link_gvkey(
        self, companyid: int, gvkey: str, start: date | None = None, end: date | None = None
    ) -> None:
        self.gvkey.append((companyid, gvkey, start, end))

    def link_permno(
        self,
        gvkey: str,
        permno: int | None,
        linkprim: str = "P",
        linktype: str = "LC",
        linkdt: date = date(1990, 1, 1),
        linkenddt: date | None = None,
    ) -> None:
        # CRSP ids are double precision on WRDS; permco is not tested, only made plausible.
        lpermno = None if permno is None else float(permno)
        lpermco = None if permno is None else float(permno + 50_000)
        self.lnkhist.append((gvkey, linkprim, "01", linktype, lpermno, lpermco, linkdt, linkenddt))

    def transcriptid(self) -> int:
        return next(self._transcriptids)

    def event(
        self,
        *,
        companyid: int | None,
        company_name: str,
        ticker: str,
        call_at: datetime,
        turns: list[Turn],
        versions: Sequence[_Spec],
        chosen: int | None,
        gvkey: str | None = None,
        permno: int | None = None,
        event_type: int = EARNINGS,
    ) -> None:
        """One key-development event with its versions; `versions[chosen]` is expected, the rest excluded.

        With `chosen` None no version is expected (outside the quarter, not an earnings call, or
        no company), and all of them are excluded.
        """
        keydevid = next(self._keydevids)
        for k, spec in enumerate(versions):
            marked = turns if spec.marker is None else _with_marker(turns, spec.marker)
            transcriptid = self._version(companyid, company_name, keydevid, call_at, marked, spec, event_type)
            if k != chosen:
                self.excluded.add(transcriptid)
                continue
            assert companyid is not None and event_type == EARNINGS
            self.calls.append(
                ExpectedCall(
                    companyid=companyid,
                    keydevid=keydevid,
                    transcriptid=transcriptid,
                    call_date=call_at.date(),
                    company_name=company_name,
                    ticker=ticker,
                    gvkey=gvkey,
                    permno=permno,
                    collection_type=COLLECTION_TYPES[spec.collection],
                    n_components=len(marked),
                    n_blank=sum(text is None or not text.strip() for _, _, text in marked),
                    n_operator=sum(speaker == OPERATOR for _, speaker, _ in marked),
                )
            )

    def _version(
        self,
        companyid: int | None,
        company_name: str,
        keydevid: int,
        call_at: datetime,
        turns: list[Turn],
        spec: _Spec,
        event_type: int,
    ) -> int:
        """The rows of one transcript version: detail, transcript, persons and components."""
        transcriptid = self.transcriptid() if spec.transcriptid is None else spec.transcriptid
        label = "Q3 2016 Earnings Call" if event_type == EARNINGS else "Business Update Call"
        # The headline carries the fiscal quarter, not the calendar one (reference §6, pitfall 5).
        headline = f"{company_name}, {label}, {call_at:%b %d, %Y}"
        audio = 2400 + len(turns) * 30
        collection, presentation = spec.collection, spec.presentation
        self.detail.append(
            (companyid, keydevid, transcriptid, headline, call_at.date(), call_at.time())
            + (event_type, EVENT_TYPES[event_type], company_name)
            + (collection, COLLECTION_TYPES[collection], presentation, PRESENTATION_TYPES[presentation])
            + (spec.created.date(), spec.created.time(), audio, 0, None, None)
        )
        self.transcript.append((transcriptid, keydevid, collection, presentation, spec.created, audio))

        # One person record per role and transcript: (transcriptpersonid, name, proid, company).
        people: dict[int, tuple[int, str, int | None, str | None]] = {}
        for speaker in sorted({speaker for _, speaker, _ in turns}):
            if speaker == OPERATOR:
                person = (next(self._personids), "Operator", None, None)  # no proid for the operator
            elif speaker == EXECUTIVE:
                person = (
                    next(self._personids),
                    f"{company_name} Executive",
                    next(self._proids),
                    company_name,
                )
            else:
                person = (
                    next(self._personids),
                    "Fixture Analyst",
                    next(self._proids),
                    "Example Securities LLC",
                )
            people[speaker] = person
            self.person.append((*person, speaker))

        for order, (component_type, speaker, text) in enumerate(turns):
            componentid = next(self._componentids)
            personid, name, proid, firm = people[speaker]
            self.component.append((componentid, transcriptid, order, component_type, personid, text))
            self.wrds_person.append(
                (transcriptid, componentid, order, component_type, COMPONENT_TYPES[component_type])
                + (personid, name, proid, firm, speaker, SPEAKER_TYPES[speaker])
                + (None if text is None else text[:400], None if text is None else len(text.split()))
            )
        return transcriptid

    def seed(self) -> WrdsSeed:
        calls = sorted(self.calls, key=lambda c: (c.companyid, c.call_date, c.keydevid))
        assert not {call.transcriptid for call in calls} & self.excluded, "a transcript expected and excluded"
        return WrdsSeed(
            quarter=QUARTER,
            calls=calls,
            excluded_transcript_ids=frozenset(self.excluded),
            case=dict(self.case),
            n_components_total=sum(call.n_components for call in calls),
        )

    def insert(self, cursor: Any) -> None:
        def rows(table: str, columns: str, values: Sequence[tuple]) -> None:
            if values:
                execute_values(cursor, f"INSERT INTO {table} ({columns}) VALUES %s", values, page_size=1000)

        t = "ciq_transcripts"
        rows(
            f"{t}.ciqtranscriptcomponenttype",
            "transcriptcomponenttypeid, transcriptcomponenttypename",
            sorted(COMPONENT_TYPES.items()),
        )
        rows(f"{t}.ciqtranscriptspeakertype", "speakertypeid, speakertypename", sorted(SPEAKER_TYPES.items()))
        rows(
            f"{t}.ciqtranscriptcollectiontype",
            "transcriptcollectiontypeid, transcriptcollectiontypename",
            sorted(COLLECTION_TYPES.items()),
        )
        rows(
            f"{t}.ciqtranscriptpresentationtype",
            "transcriptpresentationtypeid, transcriptpresentationtypename",
            sorted(PRESENTATION_TYPES.items()),
        )
        rows(
            f"{t}.ciqtranscript",
            "transcriptid, keydevid, transcriptcollectiontypeid, "
            "transcriptpresentationtypeid, transcriptcreationdateutc, audiolengthsec",
            self.transcript,
        )
        rows(
            f"{t}.ciqtranscriptperson",
            "transcriptpersonid, transcriptpersonname, proid, companyname, speakertypeid",
            self.person,
        )
        rows(
            f"{t}.ciqtranscriptcomponent",
            "transcriptcomponentid, transcriptid, componentorder, "
            "transcriptcomponenttypeid, transcriptpersonid, componenttext",
            self.component,
        )
        rows(
            f"{t}.wrds_transcript_detail",
            "companyid, keydevid, transcriptid, headline, mostimportantdateutc, mostimportanttimeutc, "
            "keydeveventtypeid, keydeveventtypename, companyname, transcriptcollectiontypeid, "
            "transcriptcollectiontypename, transcriptpresentationtypeid, transcriptpresentationtypename, "
            "transcriptcreationdate_utc, transcriptcreationtime_utc, audiolengthsec, isdelayed_flag, "
            "delayreasontypeid, delayreasontypename",
            self.detail,
        )
        rows(
            f"{t}.wrds_transcript_person",
            "transcriptid, transcriptcomponentid, componentorder, transcriptcomponenttypeid, "
            "transcriptcomponenttypename, transcriptpersonid, transcriptpersonname, proid, "
            "companyofperson, speakertypeid, speakertypename, componenttextpreview, word_count",
            self.wrds_person,
        )
        rows("ciq_common.wrds_gvkey", "companyid, gvkey, startdate, enddate", self.gvkey)
        rows("ciq_common.wrds_ticker", "companyid, companyname, ticker, startdate, enddate", self.ticker)
        rows(
            "crsp_a_ccm.ccmxpf_lnkhist",
            "gvkey, linkprim, liid, linktype, lpermno, lpermco, linkdt, linkenddt",
            self.lnkhist,
        )
        # The legacy link table holds the same links, all marked used.
        cursor.execute(
            "INSERT INTO crsp_a_ccm.ccmxpf_linktable "
            "SELECT gvkey, linkprim, liid, linktype, lpermno, lpermco, 1, linkdt, linkenddt "
            "FROM crsp_a_ccm.ccmxpf_lnkhist"
        )


# --- the seed ------------------------------------------------------------------------------------


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute))


def _next_morning(day: date) -> datetime:
    return _at(day + timedelta(days=1), 9, 30)


def _seed_corpus_calls(builder: _SeedBuilder, firms: list[_CorpusCall]) -> None:
    """The corpus firms: one Final, Proofed version per call, and links for most firms.

    Every third firm also has an earlier Spellchecked version of the same text, so components
    repeat across versions as on WRDS (reference §6, pitfall 1). Firms 6, 13, 20, 27 have no GVKEY
    (like non-US firms); firms 5, 12, 19, 26 have a GVKEY whose only CCM row is an LX link, which
    has a PERMNO but is no usable link. Links of odd firms end after the quarter, those of even
    firms are open.
    """
    companyids: dict[str, int] = {}
    for call in firms:
        # A ticker with two calls in the quarter is one company with two events.
        new = call.ticker not in companyids
        i = companyids.setdefault(call.ticker, len(companyids))
        companyid = 100_000 + i * 10
        gvkey = None if i % 7 == 6 else f"{10_000 + i:06d}"
        permno = None if gvkey is None or i % 7 == 5 else 10_000 + i
        if new:
            builder.company(companyid, call.company_name, call.ticker)
            if gvkey is not None:
                builder.link_gvkey(companyid, gvkey)
                if permno is not None:
                    builder.link_permno(gvkey, permno, linkenddt=None if i % 2 == 0 else date(2018, 12, 31))
                else:
                    builder.link_permno(gvkey, 10_000 + i, "P", "LX")

        call_at = _at(call.call_date, 13 + i % 8, 30 * (i % 2))
        versions = [_Spec(created=_at(call.call_date + timedelta(days=1), 10, 15))]
        if i % 3 == 0:
            versions.insert(0, _Spec(created=call_at + timedelta(hours=3), collection=SPELLCHECKED))
        builder.event(
            companyid=companyid,
            company_name=call.company_name,
            ticker=call.ticker,
            call_at=call_at,
            turns=_turns(call.texts),
            versions=versions,
            chosen=len(versions) - 1,
            gvkey=gvkey,
            permno=permno,
        )


def _long_text(donors: list[_CorpusCall]) -> str:
    """Real text joined into one turn of more than 40,000 characters, with a marker in its last sentence."""
    parts: list[str] = []
    length = 0
    for text in (text for donor in donors for text in donor.texts):
        if length > LONG_COMPONENT_MIN_CHARS:
            break
        parts.append(text)
        length += len(text) + 1
    long_text = " ".join(parts) + f" That ends our prepared remarks, {LONG_COMPONENT_END_MARKER}."
    assert len(long_text) > LONG_COMPONENT_MIN_CHARS
    assert long_text.index(LONG_COMPONENT_END_MARKER) > EXCEL_CELL_LIMIT
    return long_text


def _seed_cases(builder: _SeedBuilder, donors: list[_CorpusCall]) -> None:
    """One company per special case of reference §3, each with text lent by a 2017Q1 call."""
    lender = iter(donors)
    position = {key: k for k, (key, _) in enumerate(CASES)}

    def turns() -> list[Turn]:
        return _turns(next(lender).texts)

    def name(key: str) -> str:
        return f"{key.replace('_', ' ').title()} Fixture Inc."

    for key, ticker in CASES:
        companyid = BIG_COMPANYID if key == "big_companyid" else 200_000 + position[key] * 10
        builder.case[key] = companyid
        builder.company(companyid, name(key), ticker)

    def codes(key: str) -> tuple[str, int]:
        """The case's own GVKEY and PERMNO codes, distinct from every other company's."""
        return f"{90_000 + position[key]:06d}", 80_000 + position[key] * 10

    def standard_links(key: str) -> tuple[str, int]:
        """A GVKEY with open dates and one open LC/P link: the case is about something else."""
        gvkey, permno = codes(key)
        builder.link_gvkey(builder.case[key], gvkey)
        builder.link_permno(gvkey, permno)
        return gvkey, permno

    def call(
        key: str,
        call_at: datetime,
        turns: list[Turn],
        links: tuple[str | None, int | None],
        versions: Sequence[_Spec] | None = None,
        chosen: int | None = 0,
        event_type: int = EARNINGS,
    ) -> None:
        """An event of a case company; by default one Final, Proofed version, which is expected."""
        builder.event(
            companyid=builder.case[key],
            company_name=name(key),
            ticker=dict(CASES)[key],
            call_at=call_at,
            turns=turns,
            versions=versions or [_Spec(created=_next_morning(call_at.date()))],
            chosen=chosen,
            gvkey=links[0],
            permno=links[1],
            event_type=event_type,
        )

    # three_versions: Spellchecked -> Edited -> Proofed, created later each time, then an even
    # later Preliminary. The ids do not follow creation order (the Proofed copy is not the highest
    # id), so neither "highest transcriptid" nor "latest, Final or not" finds the right version.
    key, day = "three_versions", date(2016, 10, 27)
    ids = [builder.transcriptid() for _ in range(4)]
    versions = [
        _Spec(_at(day, 16, 45), SPELLCHECKED, FINAL, VERSION_MARKERS[7], ids[2]),
        _Spec(_at(day + timedelta(days=1), 9), EDITED, FINAL, VERSION_MARKERS[2], ids[0]),
        _Spec(_at(day + timedelta(days=4), 11, 30), PROOFED, FINAL, VERSION_MARKERS[1], ids[1]),
        _Spec(_at(day + timedelta(days=19), 8), SPELLCHECKED, PRELIMINARY, PRELIMINARY_MARKER, ids[3]),
    ]
    call(key, _at(day, 14), turns(), standard_links(key), versions, chosen=2)

    # version_tie: two Final versions created at the same moment; the higher transcriptid wins.
    key, day = "version_tie", date(2016, 11, 3)
    created = _at(day + timedelta(days=1), 10)
    versions = [_Spec(created, marker=TIE_LOWER_MARKER), _Spec(created, marker=TIE_HIGHER_MARKER)]
    call(key, _at(day, 15), turns(), standard_links(key), versions, chosen=1)

    # non_earnings: an earnings call, then a guidance call (event type 49) later in the quarter
    # whose transcript is newer and has the higher id: only the earnings call is expected.
    key = "non_earnings"
    links = standard_links(key)
    call(key, _at(date(2016, 11, 8), 13, 30), turns(), links)
    day = date(2016, 12, 6)
    versions = [_Spec(_next_morning(day), marker=NON_EARNINGS_MARKER)]
    call(key, _at(day, 16), turns(), links, versions, chosen=None, event_type=GUIDANCE)

    # no_gvkey: no wrds_gvkey row at all, as for most non-US firms.
    call("no_gvkey", _at(date(2016, 11, 10), 14), turns(), (None, None))

    # gvkey_ranges: an old GVKEY that ended before the call (with the lower code and a link of its
    # own that is still open) and the current one, open-ended: only the current one applies.
    key = "gvkey_ranges"
    new, permno = codes(key)
    old = f"{85_000 + position[key]:06d}"
    builder.link_gvkey(builder.case[key], old, None, date(2015, 12, 31))
    builder.link_gvkey(builder.case[key], new, date(2016, 1, 1), None)
    builder.link_permno(old, permno + 1)
    builder.link_permno(new, permno, linkdt=date(2016, 1, 1))
    call(key, _at(date(2016, 11, 14), 14), turns(), (new, permno))

    # p_and_c: a P and a C link both cover the call, the C with the later start and the lower
    # PERMNO, plus a still later J link: the P link's PERMNO is expected.
    key = "p_and_c"
    gvkey, permno = codes(key)
    permno += 5
    builder.link_gvkey(builder.case[key], gvkey)
    builder.link_permno(gvkey, permno, "P", linkdt=date(1995, 1, 1))
    builder.link_permno(gvkey, permno - 4, "C", linkdt=date(2010, 1, 1))
    builder.link_permno(gvkey, permno - 3, "J", linkdt=date(2012, 1, 1))
    call(key, _at(date(2016, 11, 15), 14), turns(), (gvkey, permno))

    # open_link: an old link closed long before the call, then the current one with no end date.
    key = "open_link"
    gvkey, permno = codes(key)
    builder.link_gvkey(builder.case[key], gvkey)
    builder.link_permno(gvkey, permno + 1, linkdt=date(1990, 1, 1), linkenddt=date(2005, 6, 30))
    builder.link_permno(gvkey, permno, linkdt=date(2005, 7, 1), linkenddt=None)
    call(key, _at(date(2016, 11, 16), 14), turns(), (gvkey, permno))

    # nr_link: a GVKEY whose only CCM row is "no link, researched", with no PERMNO.
    key = "nr_link"
    gvkey, _ = codes(key)
    builder.link_gvkey(builder.case[key], gvkey)
    builder.link_permno(gvkey, None, "P", "NR")
    call(key, _at(date(2016, 11, 17), 14), turns(), (gvkey, None))

    # blank_components: a NULL prepared-remarks turn and a blank answer among normal turns.
    key = "blank_components"
    blanks = turns()
    blanks.insert(2, (PRESENTER, EXECUTIVE, None))
    blanks.append((ANSWER, EXECUTIVE, "   "))
    call(key, _at(date(2016, 11, 21), 14), blanks, standard_links(key))

    # long_component: one prepared-remarks turn of real text longer than 40,000 characters whose
    # last sentence, past Excel's 32,767-character cell limit, carries a marker.
    key = "long_component"
    long = turns()
    long.insert(1, (PRESENTER, EXECUTIVE, _long_text(donors)))
    call(key, _at(date(2016, 11, 22), 14), long, standard_links(key))

    # crlf: pairs of corpus turns joined by Windows line breaks, as CIQ text sometimes has.
    key = "crlf"
    lent = next(lender).texts
    joined = ["\r\n".join(lent[k : k + 2]) for k in range(0, len(lent), 2)]
    call(key, _at(date(2016, 11, 29), 14), _turns(joined), standard_links(key))

    # late_call: 23:30 UTC on the quarter's last day (still in it), transcribed after midnight;
    # only an Edited copy exists, which must still be taken.
    key = "late_call"
    versions = [_Spec(_at(date(2017, 1, 1), 2, 15), EDITED)]
    call(key, _at(date(2016, 12, 31), 23, 30), turns(), standard_links(key), versions)

    # after_quarter / before_quarter: calls just outside the half-open UTC range, never expected.
    call("after_quarter", _at(date(2017, 1, 1), 0, 30), turns(), standard_links("after_quarter"), chosen=None)
    call("before_quarter", _at(date(2016, 9, 30), 21), turns(), standard_links("before_quarter"), chosen=None)

    # big_companyid: a companyid above 2**31.
    call("big_companyid", _at(date(2016, 12, 1), 14), turns(), standard_links("big_companyid"))

    # two_calls: two earnings calls (two keydevids) of one firm in the quarter; both expected.
    links = standard_links("two_calls")
    call("two_calls", _at(date(2016, 10, 18), 14), turns(), links)
    call("two_calls", _at(date(2016, 12, 13), 21), turns(), links)

    # An earnings transcript with no companyid: it belongs to no firm and must be ignored.
    day = date(2016, 11, 30)
    builder.event(
        companyid=None,
        company_name="Unassigned Fixture Transcript",
        ticker="",
        call_at=_at(day, 15),
        turns=turns(),
        versions=[_Spec(_next_morning(day))],
        chosen=None,
    )
