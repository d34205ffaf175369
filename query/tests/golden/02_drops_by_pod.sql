-- Drops per pod by reason (the pod_drops view), top 15.
SELECT namespace, pod, drop_reason, direction, sum(packets) AS packets, count(*) AS records
FROM pod_drops
WHERE interval_start >= '2026-01-01T00:00:00Z' AND interval_start < '2026-01-01T02:00:00Z'
GROUP BY namespace, pod, drop_reason, direction
ORDER BY packets DESC, namespace, pod, drop_reason, direction LIMIT 15
