"""The WRDS stand-in itself, through the real `wrds` package: it must be right before ftm is tested on it.

The queries are the canonical ones of the team's WRDS notes (outside this repository), copied as
they stand there, so these tests also show that those queries find exactly what the seed says.
"""

from __future__ import annotations

import io
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pandas as pd
import psycopg2
import pytest
import sqlalchemy.exc
import wrds
import wrds.sql

from wrds_server import (
    LONG_COMPONENT_END_MARKER,
    OPERATOR_MARKER,
    PRELIMINARY_MARKER,
    TIE_HIGHER_MARKER,
    TIE_LOWER_MARKER,
    VERSION_MARKERS,
    WrdsServer,
)

QUERY_1 = """
WITH versions AS (
    SELECT d.companyid, d.companyname, d.keydevid, d.transcriptid, d.headline,
           d.mostimportantdateutc, d.mostimportanttimeutc,
           d.transcriptcollectiontypeid, d.transcriptcollectiontypename,
           d.transcriptpresentationtypeid, d.transcriptcreationdate_utc, d.transcriptcreationtime_utc,
           ROW_NUMBER() OVER (
               PARTITION BY d.companyid, d.keydevid
               ORDER BY (d.transcriptpresentationtypeid = 5) DESC NULLS LAST,   -- prefer 'Final'
                        d.transcriptcreationdate_utc DESC NULLS LAST,
                        d.transcriptcreationtime_utc DESC NULLS LAST,
                        d.transcriptid DESC) AS version_rank
    FROM ciq.wrds_transcript_detail AS d
    WHERE d.keydeveventtypeid = 48                    -- Earnings Calls
      AND d.companyid IS NOT NULL
      AND d.mostimportantdateutc >= %(start)s
      AND d.mostimportantdateutc <  %(end)s
)
SELECT v.companyid::bigint AS companyid, v.companyname, v.keydevid::bigint AS keydevid,
       v.transcriptid::bigint AS transcriptid, v.headline,
       v.mostimportantdateutc, v.mostimportanttimeutc,
       v.transcriptcollectiontypename, v.transcriptcreationdate_utc,
       g.gvkey, l.permno, l.permco, l.linktype, l.linkprim
FROM versions AS v
LEFT JOIN LATERAL (
    SELECT wg.gvkey
    FROM ciq.wrds_gvkey AS wg
    WHERE wg.companyid = v.companyid
      AND (wg.startdate IS NULL OR wg.startdate <= v.mostimportantdateutc)
      AND (wg.enddate   IS NULL OR wg.enddate   >= v.mostimportantdateutc)
    ORDER BY wg.startdate DESC NULLS LAST, wg.gvkey
    LIMIT 1
) AS g ON TRUE
LEFT JOIN LATERAL (
    SELECT ccm.lpermno::bigint AS permno, ccm.lpermco::bigint AS permco, ccm.linktype, ccm.linkprim
    FROM crsp.ccmxpf_lnkhist AS ccm
    WHERE ccm.gvkey = g.gvkey
      AND ccm.linktype IN ('LU', 'LC')
      AND ccm.linkprim IN ('P', 'C')
      AND v.mostimportantdateutc >= ccm.linkdt
      AND v.mostimportantdateutc <= COALESCE(ccm.linkenddt, DATE '9999-12-31')
    ORDER BY (ccm.linkprim = 'P') DESC, (ccm.linktype = 'LC') DESC, ccm.linkdt DESC
    LIMIT 1
) AS l ON TRUE
WHERE v.version_rank = 1
ORDER BY v.companyid, v.mostimportantdateutc, v.keydevid;
"""

QUERY_2 = """
SELECT p.transcriptid::bigint          AS transcriptid,
       p.transcriptcomponentid::bigint AS transcriptcomponentid,
       p.componentorder, p.transcriptcomponenttypeid, p.transcriptcomponenttypename,
       p.transcriptpersonid::bigint    AS transcriptpersonid,
       p.transcriptpersonname, p.companyofperson, p.speakertypeid, p.speakertypename,
       c.componenttext
FROM ciq.wrds_transcript_person AS p
JOIN ciq.ciqtranscriptcomponent AS c ON c.transcriptcomponentid = p.transcriptcomponentid
WHERE p.transcriptid = ANY(%(transcriptids)s)     -- pass a Python list of ints
ORDER BY p.transcriptid, p.componentorder;
"""


@pytest.fixture
def offline_wrds(wrds_server: WrdsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `wrds` package can reach nothing but the fixture, and a failed login cannot prompt.

    On a failure `wrds.Connection` retries against WRDS_POSTGRES_HOST and then asks for
    credentials on stdin; with the fixture host there and an empty stdin it raises EOFError.
    """
    monkeypatch.setattr(wrds.sql, "WRDS_POSTGRES_HOST", wrds_server.host)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


@pytest.fixture
def db(wrds_server: WrdsServer, offline_wrds: None) -> Iterator[wrds.Connection]:
    connection = wrds.Connection(**wrds_server.wrds_kwargs())
    yield connection
    connection.close()


def _value(value: Any) -> Any:
    return None if pd.isna(value) else value


def test_query_1_finds_exactly_the_seeded_calls(wrds_server: WrdsServer, db: wrds.Connection) -> None:
    seed = wrds_server.seed
    frame = db.raw_sql(
        QUERY_1,
        params={"start": "2016-10-01", "end": "2017-01-01"},
        date_cols=["mostimportantdateutc", "transcriptcreationdate_utc"],
    )
    found = [
        (
            int(row.companyid),
            int(row.keydevid),
            int(row.transcriptid),
            row.mostimportantdateutc.date(),
            row.companyname,
            _value(row.gvkey),
            None if _value(row.permno) is None else int(row.permno),
            row.transcriptcollectiontypename,
        )
        for row in frame.itertuples(index=False)
    ]
    expected = [
        (
            c.companyid,
            c.keydevid,
            c.transcriptid,
            c.call_date,
            c.company_name,
            c.gvkey,
            c.permno,
            c.collection_type,
        )
        for c in seed.calls
    ]
    assert found == expected
    assert not {row[2] for row in found} & seed.excluded_transcript_ids


def test_seed_covers_every_case(wrds_server: WrdsServer) -> None:
    seed = wrds_server.seed
    assert seed.quarter == "2016Q4"
    by_company = Counter(call.companyid for call in seed.calls)
    case = seed.case
    assert by_company[case["two_calls"]] == 2
    assert case["big_companyid"] > 2**31 and by_company[case["big_companyid"]] == 1
    assert case["after_quarter"] not in by_company and case["before_quarter"] not in by_company
    calls = {call.companyid: call for call in seed.calls}
    assert calls[case["no_gvkey"]].gvkey is None and calls[case["no_gvkey"]].permno is None
    assert calls[case["nr_link"]].gvkey is not None and calls[case["nr_link"]].permno is None
    assert calls[case["late_call"]].collection_type == "Edited Copy"
    assert calls[case["blank_components"]].n_blank == 2
    # Most corpus firms are linked, and the excluded transcripts really are in the tables.
    corpus = [call for call in seed.calls if call.companyid < 200_000]
    assert len({call.ticker for call in corpus}) == 30
    assert sum(call.permno is not None for call in corpus) > len(corpus) // 2
    excluded = sorted(seed.excluded_transcript_ids)
    present = wrds_server.admin_execute(
        "SELECT count(DISTINCT transcriptid) FROM ciq.wrds_transcript_detail WHERE transcriptid = ANY(%s)",
        (excluded,),
    )
    assert present == [(len(excluded),)]
    (unowned,) = wrds_server.admin_execute(
        "SELECT count(*) FROM ciq.wrds_transcript_detail WHERE companyid IS NULL AND keydeveventtypeid = 48"
    )
    assert unowned == (1,)


def test_query_2_returns_the_chosen_versions_text_intact(
    wrds_server: WrdsServer, db: wrds.Connection
) -> None:
    seed = wrds_server.seed
    ids = [call.transcriptid for call in seed.calls]
    frame = db.raw_sql(QUERY_2, params={"transcriptids": ids})
    assert len(frame) == seed.n_components_total
    texts = frame["componenttext"].astype(object).where(frame["componenttext"].notna(), None)
    for call in seed.calls:
        mine = frame["transcriptid"] == call.transcriptid
        blank = sum(text is None or not text.strip() for text in texts[mine])
        operator = int((frame.loc[mine, "speakertypename"] == "Operator").sum())
        assert (int(mine.sum()), blank, operator) == (call.n_components, call.n_blank, call.n_operator)
        assert list(frame.loc[mine, "componentorder"]) == list(range(call.n_components))
    assert all(OPERATOR_MARKER in text for text in texts[frame["speakertypename"] == "Operator"])

    def text_of(case: str) -> str:
        (call,) = [call for call in seed.calls if call.companyid == seed.case[case]]
        return "\n".join(text for text in texts[frame["transcriptid"] == call.transcriptid] if text)

    chosen = text_of("three_versions")
    assert VERSION_MARKERS[1] in chosen
    assert not any(
        marker in chosen for marker in (VERSION_MARKERS[2], VERSION_MARKERS[7], PRELIMINARY_MARKER)
    )
    assert TIE_HIGHER_MARKER in text_of("version_tie") and TIE_LOWER_MARKER not in text_of("version_tie")
    assert "\r\n" in text_of("crlf")
    longest = max((text for text in texts if text), key=len)
    assert len(longest) > 40_000 and longest.rstrip(".").endswith(LONG_COMPONENT_END_MARKER)
    assert longest.index(LONG_COMPONENT_END_MARKER) > 32_767


def test_tls_is_on_and_both_spellings_of_the_schemas_exist(db: wrds.Connection) -> None:
    ssl = db.raw_sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert bool(ssl["ssl"].iloc[0]) is True
    assert db.list_libraries() == ["ciq", "ciq_common", "ciq_transcripts", "crsp", "crsp_a_ccm"]
    product = db.raw_sql("SELECT count(*) AS n FROM ciq_transcripts.wrds_transcript_detail")
    friendly = db.raw_sql("SELECT count(*) AS n FROM ciq.wrds_transcript_detail")
    assert int(product["n"].iloc[0]) == int(friendly["n"].iloc[0]) > 0


def test_a_wrong_password_is_refused_without_leaving_the_machine(
    wrds_server: WrdsServer, offline_wrds: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host=wrds_server.host,
            port=wrds_server.port,
            dbname=wrds_server.dbname,
            user=wrds_server.user,
            password="wrong-horse",
            sslmode="require",
        )
    # wrds.Connection swallows the refusal, skips the fallback host (it is the fixture now) and
    # then asks for credentials on the empty stdin.
    with pytest.raises(EOFError):
        wrds.Connection(verbose=True, **{**wrds_server.wrds_kwargs(), "wrds_password": "wrong-horse"})
    out = capsys.readouterr().out
    assert "password authentication failed" in out
    assert "wharton" not in out


def test_only_tls_connections_are_accepted(wrds_server: WrdsServer) -> None:
    with pytest.raises(psycopg2.OperationalError, match="no pg_hba.conf entry"):
        psycopg2.connect(
            host=wrds_server.host,
            port=wrds_server.port,
            dbname=wrds_server.dbname,
            user=wrds_server.user,
            password=wrds_server.password,
            sslmode="disable",
        )


def test_terminate_drops_a_session(wrds_server: WrdsServer, offline_wrds: None) -> None:
    name = "ftm-fixture-terminate-test"
    db = wrds.Connection(
        **wrds_server.wrds_kwargs(), wrds_connect_args={"sslmode": "require", "application_name": name}
    )
    try:
        assert wrds_server.terminate(name) == 1
        with pytest.raises(sqlalchemy.exc.OperationalError):
            db.raw_sql("SELECT 1 AS one")
    finally:
        db.engine.dispose()
