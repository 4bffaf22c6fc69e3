-- Append a batch of audit events to one stream, bounded by length and by age (both approximate,
-- so Redis trims whole macro nodes cheaply). One call per stream per batch: a command per event
-- cost the client more than the events themselves.
-- KEYS[1] stream; ARGV[1] max length, ARGV[2] oldest id kept, ARGV[3..] encoded events
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2])
return #ARGV - 2
