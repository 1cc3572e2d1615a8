-- Publish each payload on a channel, in order (a pipeline cannot PUBLISH on a cluster;
-- a script can, and it is one round trip there too). ARGV: base, channel, payloads...
local channel = ARGV[2]
for i = 3, #ARGV do
  redis.call('PUBLISH', channel, ARGV[i])
end
return #ARGV - 2
