-- Append a batch of audit events to one stream, bounded by length and by age (both approximate,
-- so Redis trims whole macro nodes cheaply). One call per stream per batch: a command per event
-- cost the client more than the events themselves. Once per batch: a batch sent again (its
-- first reply was lost, and it may have run) finds its marker and adds nothing.
-- KEYS[1] stream, KEYS[2] the batch's marker for this stream; ARGV[1] max length, ARGV[2]
-- oldest id kept, ARGV[3] marker ttl s, ARGV[4..] encoded events
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  return 0
end
for i = 4, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2])
return #ARGV - 3
