-- Exercises what a JIT'd interpreter must get right: recursion, closures, coroutines,
-- strings and patterns, tables and sorting, math (libm), formatting, errors and pcall.
local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
print("fib(24)", fib(24))

local function counter()
  local n = 0
  return function() n = n + 1; return n end
end
local c = counter(); c(); c()
print("closure", c())

local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i * i) end end)
print("coroutine", gen(), gen(), gen())

local words = {}
for w in ("the quick brown fox jumps over the lazy dog"):gmatch("%a+") do words[#words + 1] = w end
table.sort(words)
print("sorted", table.concat(words, ","))
print("gsub", (("hello world"):gsub("o", "0")))
print("format", string.format("%5.2f|%x|%q|%-4s|", math.pi, 255, "a\nb", "z"))

local acc = 0
for i = 1, 1000 do acc = acc + math.sqrt(i) * math.sin(i) end
print("math", string.format("%.6f", acc), math.floor(-3.5), math.maxinteger)

local t = setmetatable({}, { __index = function(_, k) return k * 2 end })
print("metatable", t[21])

local ok, err = pcall(function() error({ code = 42 }) end)
print("pcall", ok, type(err), err.code)
local ok2, msg = pcall(function() local x = nil; return x.field end)
print("error", ok2, (msg:gsub("^.-:%d+: ", "")))

print("args", select("#", ...), ...)
os.exit(7)
