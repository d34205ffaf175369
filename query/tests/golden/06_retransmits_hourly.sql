-- TCP retransmits per hour (partition pruning: only hour 01 is read).
SELECT hour, sum(tcp_retransmits) AS retransmits, sum(tcp_resets) AS resets
FROM flows
WHERE interval_start >= '2026-01-01T01:00:00Z' AND interval_start < '2026-01-01T02:00:00Z'
  AND tcp_retransmits IS NOT NULL
GROUP BY hour ORDER BY hour
