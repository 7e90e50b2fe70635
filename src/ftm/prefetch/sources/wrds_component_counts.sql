-- How many components the chosen transcripts have, for `ftm prefetch --dry-run`.
SELECT count(*)::bigint AS n_components
FROM ciq.ciqtranscriptcomponent AS c
WHERE c.transcriptid = ANY(%(transcriptids)s)
