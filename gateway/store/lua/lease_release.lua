-- Give up a lease, if this holder still has it (another may have taken it over since).
-- KEYS[1] lease hash; ARGV[1] holder
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
