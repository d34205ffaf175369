-- Rows per partition and observation point of the fixed gen table.
SELECT date, hour, observation_point, count(*) AS rows, sum(packets) AS packets
FROM flows GROUP BY date, hour, observation_point ORDER BY date, hour, observation_point
