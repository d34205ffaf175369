-- Top talkers per workload, each packet counted once.
SELECT namespace, workload, sum(bytes) AS bytes, sum(packets) AS packets,
  count(DISTINCT coalesce(peer_pod, peer_ip)) AS peers
FROM pod_talkers GROUP BY namespace, workload ORDER BY bytes DESC, namespace, workload LIMIT 10
