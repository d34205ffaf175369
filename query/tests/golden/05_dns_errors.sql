-- DNS errors per namespace and rcode.
SELECT namespace, dns_rcode, count(*) AS errors FROM pod_dns_errors
GROUP BY namespace, dns_rcode ORDER BY namespace, dns_rcode
