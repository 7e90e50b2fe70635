-- The WRDS tables that ftm reads, as a local PostgreSQL fixture stands in for them
-- (the team's WRDS notes, outside this repository, give these tables; what ftm reads of them is in
-- docs/architecture.md, *WRDS*). Product schemas hold the tables and the "friendly
-- name" schemas ciq and crsp hold views over them, as on WRDS, so either spelling works.
-- No primary keys or unique constraints: WRDS declares none, and they would hide the duplicate
-- rows that the real data has.

-- ===== product schemas (hold the tables) =====
CREATE SCHEMA ciq_transcripts;
CREATE SCHEMA ciq_common;
CREATE SCHEMA crsp_a_ccm;
-- ===== friendly schemas (views over the product schemas, as WRDS does) =====
CREATE SCHEMA ciq;
CREATE SCHEMA crsp;

-- ---------- code tables (columns [P]; types [U]) ----------
CREATE TABLE ciq_transcripts.ciqtranscriptcomponenttype (
  transcriptcomponenttypeid   smallint NOT NULL,
  transcriptcomponenttypename varchar(200));
CREATE TABLE ciq_transcripts.ciqtranscriptspeakertype (
  speakertypeid   smallint NOT NULL,
  speakertypename varchar(200));
CREATE TABLE ciq_transcripts.ciqtranscriptcollectiontype (
  transcriptcollectiontypeid   integer NOT NULL,
  transcriptcollectiontypename varchar(200));
CREATE TABLE ciq_transcripts.ciqtranscriptpresentationtype (
  transcriptpresentationtypeid   integer NOT NULL,
  transcriptpresentationtypename varchar(200));

-- ---------- raw Capital IQ transcript tables ----------
CREATE TABLE ciq_transcripts.ciqtranscript (            -- columns [P]; types [U]
  transcriptid                 integer NOT NULL,
  keydevid                     integer,
  transcriptcollectiontypeid   integer,
  transcriptpresentationtypeid integer,
  transcriptcreationdateutc    timestamp without time zone,   -- no underscore here (Xpressfeed name)
  audiolengthsec               integer);
  -- Xpressfeed may also carry isDelayedFlag-type columns here; delay reasons live in a separate
  -- ciqTranscriptDelayReason table in Xpressfeed [U for WRDS]
CREATE TABLE ciq_transcripts.ciqtranscriptperson (       -- columns [P]; types [U]
  transcriptpersonid   integer NOT NULL,
  transcriptpersonname varchar(400),
  proid                integer,          -- CIQ professional id (NULL for operator / unknown people)
  companyname          varchar(400),     -- speaker's firm, e.g. the analyst's broker
  speakertypeid        smallint);
CREATE TABLE ciq_transcripts.ciqtranscriptcomponent (    -- columns+types [P] (WRDS dictionary)
  transcriptcomponentid     integer NOT NULL,
  transcriptid              integer NOT NULL,
  componentorder            smallint,    -- starts at 0 [P]
  transcriptcomponenttypeid smallint,
  transcriptpersonid        integer,
  componenttext             text);       -- unbounded; can be NULL/blank

-- ---------- WRDS-built denormalised tables ----------
CREATE TABLE ciq_transcripts.wrds_transcript_detail (    -- columns [P]; types [P] from WRDS dictionary
  companyid                      numeric(11,0),   -- can be NULL
  keydevid                       numeric(11,0),
  transcriptid                   numeric(11,0),
  headline                       varchar(381),    -- "<Co>, Q1 2023 Earnings Call, Feb 02, 2023"
  mostimportantdateutc           date,            -- call date (UTC)
  mostimportanttimeutc           time without time zone,  -- [U] exact PG type ("Time" in dictionary)
  keydeveventtypeid              numeric(11,0),   -- 48 = Earnings Calls
  keydeveventtypename            varchar(400),    -- 'Earnings Calls'
  companyname                    varchar(400),
  transcriptcollectiontypeid     integer,
  transcriptcollectiontypename   varchar(200),
  transcriptpresentationtypeid   integer,
  transcriptpresentationtypename varchar(200),
  transcriptcreationdate_utc     date,            -- note the underscore (differs from ciqtranscript)
  transcriptcreationtime_utc     time without time zone,  -- [U] exact PG type
  audiolengthsec                 numeric(11,0),
  isdelayed_flag                 smallint,        -- [U] present in a 2021 SAS script, absent from the
  delayreasontypeid              integer,         --      2025 dictionary excerpt; types [U]
  delayreasontypename            varchar(200));
CREATE TABLE ciq_transcripts.wrds_transcript_person (    -- columns [P]; types [U]
  transcriptid                numeric(11,0),
  transcriptcomponentid       numeric(11,0),
  componentorder              smallint,
  transcriptcomponenttypeid   smallint,
  transcriptcomponenttypename varchar(200),
  transcriptpersonid          numeric(11,0),
  transcriptpersonname        varchar(400),
  proid                       numeric(11,0),
  companyofperson             varchar(400),
  speakertypeid               smallint,
  speakertypename             varchar(200),
  componenttextpreview        varchar(400),   -- truncated preview only; full text is in ciqtranscriptcomponent
  word_count                  integer);

-- ---------- identifier links ----------
CREATE TABLE ciq_common.wrds_gvkey (        -- columns [P]; types [U]
  companyid numeric(11,0),
  gvkey     varchar(6),     -- zero-padded text, e.g. '001690'
  startdate date,           -- NULL = open start (SAS special missing .B on WRDS SAS)
  enddate   date);          -- NULL = open end   (SAS special missing .E)
CREATE TABLE ciq_common.wrds_ticker (       -- columns+types [P] (WRDS dictionary)
  companyid   numeric(11,0),
  companyname varchar(400),
  ticker      varchar(15),
  startdate   date,
  enddate     date);
CREATE TABLE crsp_a_ccm.ccmxpf_lnkhist (    -- columns [C]; types [P]/[U]
  gvkey     varchar(6),
  linkprim  varchar(1),     -- P, C, J, N
  liid      varchar(3),
  linktype  varchar(2),     -- LC, LU, LS, LX, LD, LN, NR, NU
  lpermno   double precision,   -- [U] type; CRSP ids are DOUBLE PRECISION on WRDS (wrds README example)
  lpermco   double precision,
  linkdt    date,
  linkenddt date);              -- NULL = link still active
CREATE TABLE crsp_a_ccm.ccmxpf_linktable (  -- legacy WRDS table; same columns + usedflag [P]
  gvkey varchar(6), linkprim varchar(1), liid varchar(3), linktype varchar(2),
  lpermno double precision, lpermco double precision, usedflag smallint,
  linkdt date, linkenddt date);

-- ---------- friendly-name views ----------
DO $$
DECLARE t record;
BEGIN
  FOR t IN SELECT table_schema, table_name FROM information_schema.tables
           WHERE table_schema IN ('ciq_transcripts','ciq_common') LOOP
    EXECUTE format('CREATE VIEW ciq.%I AS SELECT * FROM %I.%I', t.table_name, t.table_schema, t.table_name);
  END LOOP;
  FOR t IN SELECT table_schema, table_name FROM information_schema.tables
           WHERE table_schema = 'crsp_a_ccm' LOOP
    EXECUTE format('CREATE VIEW crsp.%I AS SELECT * FROM %I.%I', t.table_name, t.table_schema, t.table_name);
  END LOOP;
END $$;
