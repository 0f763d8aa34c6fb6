-- Cases for tests/unit/test_lua_patterns.c: Lua expressions using string.find, match,
-- gmatch and gsub, whose expected results come from the stock Lua 5.4 interpreter.
-- Regenerate the header after changing the list:
--     lua5.4 tests/unit/lua_patterns_cases.lua > tests/unit/lua_patterns_cases.h
-- Each case runs as the chunk PRELUDE .. "return ser(<expr>)" named "=case", here and in
-- the test (there, in the sandbox with the bounded functions installed).

local PRELUDE = [[
local function ser(...)
  local n, out = select('#', ...), {}
  for i = 1, n do
    local v = select(i, ...)
    out[i] = type(v) == 'string' and string.format('%q', v) or tostring(v)
  end
  return n .. ':' .. table.concat(out, ',')
end
local function all(it)
  local out = {}
  while #out < 100 do
    local r = table.pack(it())
    if r[1] == nil then break end
    out[#out + 1] = ser(table.unpack(r, 1, r.n))
  end
  return #out .. '{' .. table.concat(out, ';') .. '}'
end
]]

local CASES = {
  -- find: plain and pattern searches, init (positive, negative, zero, past the end)
  [=[("hello world"):find("o w")]=],
  [=[("hello world"):find("o", 5)]=],
  [=[("hello world"):find("o", 6)]=],
  [=[("hello world"):find("o", -3)]=],
  [=[("hello world"):find("o", -100)]=],
  [=[("hello"):find("h", 0)]=],
  [=[("hello"):find("o", -1)]=],
  [=[("hello"):find("l", 3.0)]=],
  [=[("hello world"):find("l+")]=],
  [=[("hello world"):find("(l+)(o)")]=],
  [=[("hello world"):find("()ll()")]=],
  [=[("hello"):find("()(l)()")]=],
  [=[("hello"):find("")]=],
  [=[("hello"):find("", 6)]=],
  [=[("hello"):find("", 7)]=],
  [=[("hello"):find("", 10)]=],
  [=[("hello"):find("", -100)]=],
  [=[("a.b"):find(".", 1, true)]=],
  [=[("a.b"):find(".", 1, 1)]=],
  [=[("a.b"):find(".", 1, false)]=],
  [=[("a.b"):find(".", 1, nil)]=],
  [=[("a+b"):find("+", 1, true)]=],
  [=[("a+b"):find("a+b")]=],
  [=[("aab"):find("a+b")]=],
  [=[("a.b.c"):find(".", 3, true)]=],
  [=[("a.b.c"):find("%.", 3)]=],
  [=[("abcabc"):find("cab", 1, true)]=],
  [=[("abcabc"):find("cax", 1, true)]=],
  [=[("a\0b\0c"):find("b\0", 1, true)]=],
  [=[("a\0b\0c"):find("\0c")]=],
  [=[("a\0b"):find("%z")]=],
  [=[("a\0b"):find("[\0]")]=],
  [=[string.find(12345, "3")]=],
  [=[string.find(12345, 3)]=],
  [=[("f(a(b)c)d"):find("%b()")]=],
  [=[("f(a(b)c"):find("%b()")]=],
  [=[("THE (quick) fox"):find("%f[%a]%a+", 5)]=],
  [=[("hello"):find("^h")]=],
  [=[("hello"):find("^e")]=],
  [=[("hello"):find("^e", 2)]=],
  [=[("hello"):find("o$")]=],
  [=[("hello"):find("l$")]=],
  [=[("a$b"):find("$b")]=],
  [=[("a^b"):find("a^")]=],
  [=[("hello"):find("^", 3)]=],
  [=[("hello"):find("$")]=],
  [=[("aaa"):find("a-", 2)]=],
  [=[("aaa"):find("a-$", 2)]=],
  [=[("aaab"):find("a*b")]=],
  [=[("b"):find("a*b")]=],
  [=[("abc"):find("[b-]")]=],
  [=[("a-c"):find("[b-]")]=],

  -- match: captures, position captures, classes, sets, back-references, %b, %f
  [=[("key = value"):match("(%w+)%s*=%s*(%w+)")]=],
  [=[("hello world from Lua"):match("^(%w+)")]=],
  [=[("  trim me  "):match("^%s*(.-)%s*$")]=],
  [=[("2024-01-15"):match("(%d+)-(%d+)-(%d+)")]=],
  [=[("abc"):match("()b()")]=],
  [=[("abc"):match("()")]=],
  [=[("hello"):match(".-(l+)(.*)")]=],
  [=[("hello"):match("(h)(e)(l)(l)(o)")]=],
  [=[("hello"):match("((h)(e))")]=],
  [=[("x = [==[a]==]"):match("%[(=*)%[")]=],
  [=[("THE (quick) fox"):match("%((%a+)%)")]=],
  [=[("abcabc"):match("(abc)%1")]=],
  [=[("abab"):match("^(ab)%1$")]=],
  [=[("abac"):match("^(ab)%1$")]=],
  [=[('say "hi" ok'):match('(["\'])(.-)%1')]=],
  [=[("hello"):match("h?ello")]=],
  [=[("ello"):match("h?ello")]=],
  [=[("[test]"):match("^%[(.*)%]$")]=],
  [=[("a,b,,c"):match("[^,]*", 5)]=],
  [=[("hello"):match("l", -2)]=],
  [=[("CamelCaseString"):match("%u%l+", 2)]=],
  [=[("0x1F"):match("^0[xX](%x+)$")]=],
  [=[("\n\t x"):match("^%s+()")]=],
  [=[("caf\195\169!"):match("[\128-\255]+")]=],
  [=[("a]b"):match("[]]")]=],
  [=[("a]b"):match("[^]]+")]=],
  [=[("a^b"):match("[%^]")]=],
  [=[("a^b"):match("[b^]+")]=],
  [=[("a-b"):match("[a%-]+")]=],
  [=[("a-b"):match("[-a]+")]=],
  [=[("a-b"):match("[a-]+")]=],
  [=[("hello"):match("[^aeiou]+")]=],
  [=[("A1 b2_"):match("[%w_]+", 4)]=],
  [=[("tab\there"):match("%c")]=],
  [=[("x!y"):match("%p")]=],
  [=[("x y"):match("%S+$")]=],
  [=[("abc123"):match("%D+")]=],
  [=[("abc123"):match("%A+")]=],
  [=[("a b"):match("%g+")]=],
  [=[("HeLLo"):match("%l+")]=],
  [=[("HeLLo"):match("%U+$")]=],
  [=[("f(a,b)"):match("%b()")]=],
  [=[("[[x]]"):match("%b[]")]=],
  [=[("<a<b>>"):match("%b<>$")]=],
  [=[("if x then y end"):match("%f[%w]then%f[%W]")]=],
  [=[("THE (quick) fox"):match("%f[%a]%a+%f[%A]")]=],
  [=[("hello world"):match("%f[%w]%w+$")]=],
  [=[("hello"):match("%f[%l]")]=],
  [=[("hello"):match("%f[%z]")]=],
  [=[("x"):match("x*")]=],
  [=[("xxxy"):match("x-y")]=],
  [=[("xxxy"):match("^(x-)(x*)y$")]=],
  [=[("aaa"):match("^(a+)(a+)$")]=],
  [=[("aaa"):match("^(a-)(a+)$")]=],
  [=[("a.b"):match("^(.-)%.(.*)$")]=],
  [=[("no match here"):match("%d")]=],
  [=[("hello"):match("")]=],
  [=[("hello"):match("", 6)]=],
  [=[("hello"):match("", 7)]=],
  [=[("hello"):match("$", 2)]=],
  [=[string.match(3.5, "%d+")]=],

  -- gsub: string replacements with %0-%9 and %%, tables, functions, max count, anchors
  [=[("hello world"):gsub("o", "0")]=],
  [=[("hello world"):gsub("o", "0", 1)]=],
  [=[("hello world"):gsub("o", "0", 0)]=],
  [=[("hello world"):gsub("o", "0", -1)]=],
  [=[("hello world"):gsub("o", "0", 2.0)]=],
  [=[("hello world"):gsub("(%w+)", "<%1>")]=],
  [=[("hello world"):gsub("%w+", "%0 %0")]=],
  [=[("hello world"):gsub("(%w+) (%w+)", "%2 %1")]=],
  [=[("hello"):gsub("", "-")]=],
  [=[("abc"):gsub("%w", "%%")]=],
  [=[("a.b"):gsub("%.", "%%")]=],
  [=[("hello"):gsub("()", "%1")]=],
  [=[("hello"):gsub("l()", "[%1]")]=],
  [=[("hello world"):gsub("o", 5)]=],
  [=[("$name is $age"):gsub("%$(%w+)", {name = "Bob", age = 42})]=],
  [=[("$name is $unknown"):gsub("%$(%w+)", {name = "Bob"})]=],
  [=[("abc"):gsub(".", {a = 1})]=],
  [=[("abc"):gsub(".", {a = false, b = "B"})]=],
  [=[("abc"):gsub("%w", function(c) return c:upper() .. "." end)]=],
  [=[("abc"):gsub("%w", function(c) if c == "b" then return false end return "X" end)]=],
  [=[("abc"):gsub("%w", function() end)]=],
  [=[("a=1, b=2"):gsub("(%w+)=(%w+)", function(k, v) return v .. "=" .. k end)]=],
  [=[("abc"):gsub("()", function(p) return p end)]=],
  [=[("a,b,c"):gsub(",", ";", 0)]=],
  [=[("  x  "):gsub("^%s+", "")]=],
  [=[("x  "):gsub("%s+$", "")]=],
  [=[("abc"):gsub("^", ">")]=],
  [=[("abc"):gsub("$", "<")]=],
  [=[("abc"):gsub("^.", "X")]=],
  [=[("x"):gsub("x*", "-")]=],
  [=[("abc"):gsub("b*", "-")]=],
  [=[("abc"):gsub("", "", 2)]=],
  [=[("one two"):gsub("(%w+)", "%0-%1")]=],
  [=[("f(a(b)c) g(d)"):gsub("%b()", "[]")]=],
  [=[("THE (quick) fox"):gsub("%f[%a]%a", string.lower)]=],
  [=[("hello"):gsub("l+", {ll = "LL"})]=],
  [=[string.gsub(12345, "%d", "x", 3)]=],
  [=[("abc"):gsub("", "")]=],
  [=[("a\0b"):gsub("%z", "0")]=],
  [=[("a\0b"):gsub("\0", "%%0")]=],

  -- gmatch: captures, empty matches, init, and '^' (not an anchor in gmatch)
  [=[all(("one two three"):gmatch("%a+"))]=],
  [=[all(("k1=v1, k2=v2"):gmatch("(%w+)=(%w+)"))]=],
  [=[all(("abc"):gmatch(""))]=],
  [=[all(("abc"):gmatch("()"))]=],
  [=[all(("abc"):gmatch(".()"))]=],
  [=[all(("hello world"):gmatch("^%w+"))]=],
  [=[all(("^a ^b"):gmatch("^%w"))]=],
  [=[all(("one two three"):gmatch("%a+", 5))]=],
  [=[all(("one two three"):gmatch("%a+", -5))]=],
  [=[all(("one two three"):gmatch("%a+", 0))]=],
  [=[all(("abc"):gmatch(".", 4))]=],
  [=[all(("abc"):gmatch("", 4))]=],
  [=[all(("abc"):gmatch(".", 10))]=],
  [=[all(("aaa"):gmatch("a*"))]=],
  [=[all(("aba"):gmatch("a*"))]=],
  [=[all(("a,b,,c"):gmatch("([^,]*)"))]=],
  [=[all(("f(a) g(b)"):gmatch("%b()"))]=],
  [=[all(("THE (quick) fox"):gmatch("%f[%a]%a+"))]=],
  [=[all(("x=1\ny=2\n"):gmatch("(%w+)=(%w+)\n"))]=],
  [=[all(("abcabc"):gmatch("(b)(c)"))]=],
  [=[all(("a1b2c3"):gmatch("%a(%d)"))]=],
  [=[all(("hello"):gmatch("l*$"))]=],

  -- errors: the same messages as stock Lua
  [=[pcall(string.find, "a", "[a")]=],
  [=[pcall(string.find, "a", "[a%")]=],
  [=[pcall(string.find, "a", "%")]=],
  [=[pcall(string.match, "a", "(a")]=],
  [=[pcall(string.match, "a", "a)")]=],
  [=[pcall(string.match, "aa", "(a)%2")]=],
  [=[pcall(string.match, "aa", "(a%1)")]=],
  [=[pcall(string.find, "a", "%b")]=],
  [=[pcall(string.find, "a", "%bx")]=],
  [=[pcall(string.find, "a", "%fa")]=],
  [=[pcall(string.gsub, "abc", "b", "%2")]=],
  [=[pcall(string.gsub, "abc", "(b)", "%2")]=],
  [=[pcall(string.gsub, "abc", "b", "%x")]=],
  [=[pcall(string.gsub, "abc", "b", "x%")]=],
  [=[pcall(string.gsub, "abc", "b", true)]=],
  [=[pcall(string.gsub, "abc", "b")]=],
  [=[pcall(string.gsub, "abc", "(b)", {b = {}})]=],
  [=[pcall(string.gsub, "abc", ".", {a = 1, b = true})]=],
  [=[pcall(string.gsub, "abc", "%w", function() return {} end)]=],
  [=[pcall(string.find, "abc", ("()"):rep(33))]=],
  [=[pcall(string.match, ("a"):rep(250), ("a?"):rep(250))]=],
  [=[pcall(string.find, "hello", "l", 3.5)]=],
  [=[pcall(string.find, "hello")]=],
  [=[pcall(string.find, nil, "x")]=],
  [=[pcall(string.gmatch, "hello")]=],
  [=[pcall(string.gsub, "hello", "l", "x", "many")]=],
  [=[pcall(all, ("abc"):gmatch("(."))]=],
  [=[select("#", ("x"):find("y"))]=],
}

local function cstr(s)
  return '"' .. s:gsub('[%c"\\\128-\255]', function(c)
    if c == '\n' then return '\\n"\n    "' end
    if c == '"' or c == '\\' then return '\\' .. c end
    return string.format('\\%03o', c:byte())
  end) .. '"'
end

local out = {}
local function w(s) out[#out + 1] = s end
w("/* Generated by `lua5.4 tests/unit/lua_patterns_cases.lua` (" .. _VERSION ..
  "): do not edit. */\n")
w("static const char PATTERN_PRELUDE[] =\n    " .. cstr(PRELUDE) .. ";\n\n")
w("static const struct pattern_case {\n    const char *expr, *want;\n} PATTERN_CASES[] = {\n")
for _, expr in ipairs(CASES) do
  local f = assert(load(PRELUDE .. "return ser(" .. expr .. ")", "=case", "t"))
  local ok, res = pcall(f)
  if not ok then error(expr .. ": " .. tostring(res)) end
  w("    {" .. cstr(expr) .. ",\n     " .. cstr(res) .. "},\n")
end
w("};\n")
io.write(table.concat(out))
