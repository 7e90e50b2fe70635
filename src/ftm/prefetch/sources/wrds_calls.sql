-- The quarter's earnings calls, one row per call (companyid, keydevid), with the version to read
-- and the firm's GVKEY and PERMNO as of the call date (see docs/architecture.md, *WRDS*).
--   * the quarter is a half-open range on mostimportantdateutc, the call's UTC date;
--   * keydeveventtypeid 48 is "Earnings Calls": guidance, conference and M&A calls are other types;
--   * one version per call: Final first, then the latest creation date and time, then the highest
--     transcriptid; never one transcript per firm, which would drop a firm's second call;
--   * LATERAL ... LIMIT 1 gives at most one GVKEY and one PERMNO per call even where the link
--     tables overlap; ids are cast to bigint here because numeric(11,0) arrives as floats.
WITH versions AS (
    SELECT d.companyid, d.companyname, d.keydevid, d.transcriptid,
           d.mostimportantdateutc, d.transcriptcollectiontypename,
           ROW_NUMBER() OVER (
               PARTITION BY d.companyid, d.keydevid
               ORDER BY (d.transcriptpresentationtypeid = 5) DESC NULLS LAST,
                        d.transcriptcreationdate_utc DESC NULLS LAST,
                        d.transcriptcreationtime_utc DESC NULLS LAST,
                        d.transcriptid DESC) AS version_rank
    FROM ciq.wrds_transcript_detail AS d
    WHERE d.keydeveventtypeid = 48
      AND d.companyid IS NOT NULL
      AND d.mostimportantdateutc >= %(start)s
      AND d.mostimportantdateutc < %(end)s
)
SELECT v.companyid::bigint AS companyid,
       v.companyname,
       v.keydevid::bigint AS keydevid,
       v.transcriptid::bigint AS transcriptid,
       v.mostimportantdateutc,
       v.transcriptcollectiontypename,
       g.gvkey,
       l.permno
FROM versions AS v
LEFT JOIN LATERAL (
    SELECT wg.gvkey
    FROM ciq.wrds_gvkey AS wg
    WHERE wg.companyid = v.companyid
      AND (wg.startdate IS NULL OR wg.startdate <= v.mostimportantdateutc)
      AND (wg.enddate IS NULL OR wg.enddate >= v.mostimportantdateutc)
    ORDER BY wg.startdate DESC NULLS LAST, wg.gvkey
    LIMIT 1
) AS g ON TRUE
LEFT JOIN LATERAL (
    SELECT ccm.lpermno::bigint AS permno
    FROM crsp.ccmxpf_lnkhist AS ccm
    WHERE ccm.gvkey = g.gvkey
      AND ccm.lpermno IS NOT NULL
      AND ccm.linktype IN ('LU', 'LC')
      AND ccm.linkprim IN ('P', 'C')
      AND v.mostimportantdateutc >= ccm.linkdt
      AND v.mostimportantdateutc <= COALESCE(ccm.linkenddt, DATE '9999-12-31')
    ORDER BY (ccm.linkprim = 'P') DESC, (ccm.linktype = 'LC') DESC, ccm.linkdt DESC, ccm.lpermno
    LIMIT 1
) AS l ON TRUE
WHERE v.version_rank = 1
ORDER BY v.companyid, v.mostimportantdateutc, v.keydevid
