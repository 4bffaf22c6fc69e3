-- Store a shared cache entry, unless the cache was invalidated since the value was asked for:
-- a refresh that was under way then must not bring back what the invalidation dropped.
-- KEYS[1] the cache hash, KEYS[2] the cache generation
-- ARGV[1] the entry's name, ARGV[2] its value, ARGV[3] now, ARGV[4] the generation it belongs to
-- Returns 1 if stored, 0 if not.
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'v:' .. ARGV[1], ARGV[2], 't:' .. ARGV[1], ARGV[3])
return 1
