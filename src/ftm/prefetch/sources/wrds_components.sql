-- The components of the chosen transcripts (a batch of a few hundred ids), in speaking order.
-- Roles come from the lookup tables' names, not from guessed ids. DISTINCT ON
-- guards against duplicated rows: WRDS declares no keys, and a repeated person row would
-- otherwise repeat a turn.
SELECT DISTINCT ON (c.transcriptid, c.componentorder, c.transcriptcomponentid)
       c.transcriptid::bigint AS transcriptid,
       c.componentorder,
       c.transcriptcomponentid::bigint AS transcriptcomponentid,
       ct.transcriptcomponenttypename AS componenttype,
       st.speakertypename AS speakertype,
       c.componenttext
FROM ciq.ciqtranscriptcomponent AS c
LEFT JOIN ciq.ciqtranscriptcomponenttype AS ct
       ON ct.transcriptcomponenttypeid = c.transcriptcomponenttypeid
LEFT JOIN ciq.ciqtranscriptperson AS p ON p.transcriptpersonid = c.transcriptpersonid
LEFT JOIN ciq.ciqtranscriptspeakertype AS st ON st.speakertypeid = p.speakertypeid
WHERE c.transcriptid = ANY(%(transcriptids)s)
ORDER BY c.transcriptid, c.componentorder, c.transcriptcomponentid
