-- The count-once rule against raw sums.
SELECT
  (SELECT sum(bytes) FROM flows WHERE verdict = 'forwarded') AS raw_bytes,
  (SELECT sum(bytes) FROM flows WHERE verdict = 'forwarded' AND (observation_point = 'from_pod' OR (observation_point = 'to_pod' AND src_pod IS NULL))) AS once_bytes
