# corral tiny test guest: the guest agent's protocol (run by /sbin/corral-agent on the port).
# It answers, in qemu-ga's JSON protocol, what corral's GuestAgent sends: guest-sync-delimited
# (the answer preceded by a 0xFF byte, as qemu-ga does), guest-sync, guest-ping, guest-exec
# (path, arg, input-data, capture-output) and guest-exec-status. Requests are JSON objects,
# not necessarily one a line: records end at each "}" and are gathered until the braces outside
# strings balance. Anything else gets an error reply. guest-exec runs the command in the
# background under a `sh -c` whose pid names its directory in $state (in, out, err, rc).
BEGIN {
    RS = "}"
    buf = ""
    ESC["\""] = "\""; ESC["\\"] = "\\"; ESC["/"] = "/"; ESC["b"] = "\b"
    ESC["f"] = "\f"; ESC["n"] = "\n"; ESC["r"] = "\r"; ESC["t"] = "\t"
    HEX = "0123456789abcdef"
    MAX = 64 * 1024 * 1024 # bytes of one request
    FF = sprintf("%c", 255)
}

{
    buf = buf $0 "}"
    # A 0xFF byte resets the parser, as in qemu-ga: a client syncing after a broken connection
    # (or a restored guest's half-read request) starts afresh.
    while ((i = index(buf, FF)) > 0) buf = substr(buf, i + 1)
    sub(/^[^{]*/, "", buf) # newlines, anything else before a request
    if (buf == "") next
    if (length(buf) > MAX) {
        reply_error("GenericError", "request too large")
        buf = ""
        next
    }
    if (!complete(buf)) next
    handle(buf)
    buf = ""
}

function complete(text,    t, opens) { # do the braces outside strings balance?
    t = text
    gsub(/"([^"\\]|\\.)*"/, "", t)
    if (index(t, "\"")) return 0 # inside a string: its "}" was not the end
    opens = gsub(/[{]/, "", t)
    return opens == gsub(/[}]/, "", t)
}

# --- JSON -------------------------------------------------------------------------------------
# parse() flattens a document into T[path] (type: o a s n t f z) and V[path] (value), paths like
# "/arguments/arg/0"; N[path] counts an array's items. It returns 0 and sets perr on bad input.

function parse(text) {
    split("", T); split("", V); split("", N)
    rest = text
    perr = ""
    if (!pvalue("")) return 0
    skipws()
    if (rest != "") return fail("trailing characters")
    return T[""] == "o" ? 1 : fail("not an object")
}

function fail(message) {
    if (perr == "") perr = message
    return 0
}

function skipws() { sub(/^[ \t\r\n]+/, "", rest) }

function pvalue(path,    c, n, key) {
    skipws()
    c = substr(rest, 1, 1)
    if (c == "{") {
        T[path] = "o"
        rest = substr(rest, 2); skipws()
        if (substr(rest, 1, 1) == "}") { rest = substr(rest, 2); return 1 }
        for (;;) {
            skipws()
            if (substr(rest, 1, 1) != "\"" || !pstring()) return fail("expected a key")
            key = str
            if (key !~ /^[A-Za-z0-9_-]+$/) return fail("unexpected key")
            if ((path "/" key) in T) return fail("duplicate key " key)
            skipws()
            if (substr(rest, 1, 1) != ":") return fail("expected ':'")
            rest = substr(rest, 2)
            if (!pvalue(path "/" key)) return 0
            skipws()
            c = substr(rest, 1, 1); rest = substr(rest, 2)
            if (c == "}") return 1
            if (c != ",") return fail("expected ',' or '}'")
        }
    }
    if (c == "[") {
        T[path] = "a"; n = 0
        rest = substr(rest, 2); skipws()
        if (substr(rest, 1, 1) == "]") { rest = substr(rest, 2); N[path] = 0; return 1 }
        for (;;) {
            if (!pvalue(path "/" n)) return 0
            n++
            skipws()
            c = substr(rest, 1, 1); rest = substr(rest, 2)
            if (c == "]") { N[path] = n; return 1 }
            if (c != ",") return fail("expected ',' or ']'")
        }
    }
    if (c == "\"") {
        if (!pstring()) return 0
        T[path] = "s"; V[path] = str
        return 1
    }
    if (match(rest, /^-?[0-9]+/)) {
        T[path] = "n"; V[path] = substr(rest, 1, RLENGTH)
        rest = substr(rest, RLENGTH + 1)
        return substr(rest, 1, 1) ~ /[.eE]/ ? fail("only integers are expected") : 1
    }
    if (match(rest, /^(true|false|null)/)) {
        T[path] = substr(rest, 1, 1) == "t" ? "t" : substr(rest, 1, 1) == "f" ? "f" : "z"
        rest = substr(rest, RLENGTH + 1)
        return 1
    }
    return fail("unexpected input")
}

function pstring(    out, c, e, code) { # rest starts with a quote; the string goes into str
    rest = substr(rest, 2); out = ""
    for (;;) {
        match(rest, /^[^"\\]*/)
        out = out substr(rest, 1, RLENGTH); rest = substr(rest, RLENGTH + 1)
        c = substr(rest, 1, 1)
        if (c == "\"") { rest = substr(rest, 2); str = out; return 1 }
        if (c == "") return fail("unterminated string")
        e = substr(rest, 2, 1)
        if (e == "u") {
            if (substr(rest, 3, 4) !~ /^[0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f]$/)
                return fail("bad unicode escape")
            code = hex(substr(rest, 3, 4))
            if (code == 0 || (code >= 55296 && code < 57344))
                return fail("unsupported unicode escape") # NUL, surrogates
            out = out utf8(code); rest = substr(rest, 7)
        } else if (e in ESC) {
            out = out ESC[e]; rest = substr(rest, 3)
        } else {
            return fail("bad escape")
        }
    }
}

function hex(digits,    i, n) {
    n = 0
    for (i = 1; i <= length(digits); i++) n = n * 16 + index(HEX, tolower(substr(digits, i, 1))) - 1
    return n
}

function utf8(code) {
    if (code < 128) return sprintf("%c", code)
    if (code < 2048) return sprintf("%c%c", 192 + int(code / 64), 128 + code % 64)
    return sprintf("%c%c%c", 224 + int(code / 4096), 128 + int(code / 64) % 64, 128 + code % 64)
}

function quote(s) { # for sh: one word, taken literally
    gsub(/'/, "'\\''", s)
    return "'" s "'"
}

# --- replies ----------------------------------------------------------------------------------

function reply(json) {
    printf "%s\n", json
    fflush()
}

function reply_error(class, desc) { # desc: this file's own text (no quotes or backslashes)
    reply("{\"error\": {\"class\": \"" class "\", \"desc\": \"" desc "\"}}")
}

function only(allowed,    k, name) { # are the request's top-level and argument keys all allowed?
    for (k in T) {
        if (k !~ /^\/[^\/]+$/ && k !~ /^\/arguments\/[^\/]+$/) continue
        name = k
        sub(/^\//, "", name)
        if (name != "execute" && name != "arguments" && index(" " allowed " ", " " name " ") == 0)
            return 0
    }
    return 1
}

function handle(text,    command) {
    if (!parse(text)) { reply_error("GenericError", "invalid JSON: " perr); return }
    if (T["/execute"] != "s") { reply_error("GenericError", "expected an execute member"); return }
    command = V["/execute"]
    if (("/arguments" in T) && T["/arguments"] != "o") {
        reply_error("GenericError", "arguments must be an object")
        return
    }
    if (command == "guest-sync-delimited" || command == "guest-sync") {
        if (!only("arguments/id") || T["/arguments/id"] != "n") {
            reply_error("GenericError", "guest-sync takes an integer id")
            return
        }
        reply((command == "guest-sync-delimited" ? FF : "") \
            "{\"return\": " V["/arguments/id"] "}")
    } else if (command == "guest-ping") {
        if (!only("")) { reply_error("GenericError", "guest-ping takes no arguments"); return }
        reply("{\"return\": {}}")
    } else if (command == "guest-exec") {
        exec_command()
    } else if (command == "guest-exec-status") {
        exec_status()
    } else {
        reply_error("CommandNotFound", "this agent answers guest-sync-delimited, guest-sync, " \
            "guest-ping, guest-exec and guest-exec-status only")
    }
}

# --- guest-exec -------------------------------------------------------------------------------

function exec_command(    i, argv, capture, input, cmd, pid) {
    if (!only("arguments/path arguments/arg arguments/input-data arguments/capture-output")) {
        reply_error("GenericError", "guest-exec takes path, arg, input-data and capture-output")
        return
    }
    if (T["/arguments/path"] != "s" || V["/arguments/path"] == "") {
        reply_error("GenericError", "guest-exec needs a path")
        return
    }
    argv = quote(V["/arguments/path"])
    if ("/arguments/arg" in T) {
        if (T["/arguments/arg"] != "a") { reply_error("GenericError", "arg must be a list"); return }
        for (i = 0; i < N["/arguments/arg"]; i++) {
            if (T["/arguments/arg/" i] != "s") {
                reply_error("GenericError", "arg must be a list of strings")
                return
            }
            argv = argv " " quote(V["/arguments/arg/" i])
        }
    }
    capture = 0
    if ("/arguments/capture-output" in T) {
        if (T["/arguments/capture-output"] !~ /^[tf]$/) {
            reply_error("GenericError", "capture-output must be a boolean")
            return
        }
        capture = T["/arguments/capture-output"] == "t"
    }
    input = ""
    if ("/arguments/input-data" in T) {
        input = V["/arguments/input-data"]
        if (T["/arguments/input-data"] != "s" || input !~ /^[A-Za-z0-9+\/=]*$/) {
            reply_error("GenericError", "input-data must be base64")
            return
        }
    }
    printf "%s", input > (state "/input.b64")
    close(state "/input.b64")
    # The launcher decodes the input into a file of its own, then starts the command under a
    # `sh -c` that names its directory after its own pid ($$, which is also $! here) and holds
    # neither the port nor the launcher's pipe.
    cmd = "exec </dev/null 2>/dev/null; cd / || exit; in=$(mktemp " quote(state "/in.XXXXXX") \
        ") || exit; base64 -d <" quote(state "/input.b64") " >\"$in\" || exit; " \
        "rm -f " quote(state "/input.b64") "; " \
        "sh -c " quote("d=" state "/$$; mkdir \"$d\" && mv \"$1\" \"$d/in\" || exit; " \
            "c=$2; shift 2; if [ \"$c\" = 1 ]; then \"$@\" <\"$d/in\" >\"$d/out\" 2>\"$d/err\"; " \
            "else \"$@\" <\"$d/in\" >/dev/null 2>&1; fi; echo $? >\"$d/rc.tmp\"; " \
            "mv \"$d/rc.tmp\" \"$d/rc\"") \
        " sh \"$in\" " capture " " argv " </dev/null >/dev/null 2>&1 & echo $!"
    pid = ""
    cmd | getline pid
    close(cmd)
    sub(/[ \t\r\n]+$/, "", pid) # (RS is "}" for every getline, so the newline stays)
    if (pid !~ /^[0-9]+$/) { reply_error("GenericError", "could not start the command"); return }
    JOBS[pid] = 1
    reply("{\"return\": {\"pid\": " pid "}}")
}

function exec_status(    pid, dir, rc, out, err) {
    if (!only("arguments/pid") || T["/arguments/pid"] != "n") {
        reply_error("GenericError", "guest-exec-status takes an integer pid")
        return
    }
    pid = V["/arguments/pid"] + 0
    dir = state "/" pid
    rc = ""
    if ((getline rc < (dir "/rc")) > 0) close(dir "/rc")
    sub(/[ \t\r\n]+$/, "", rc)
    if (rc !~ /^[0-9]+$/) {
        if ((pid in JOBS) || system("test -d " quote(dir)) == 0) {
            reply("{\"return\": {\"exited\": false}}")
        } else {
            reply_error("GenericError", "no command with that pid")
        }
        return
    }
    out = slurp64(dir "/out")
    err = slurp64(dir "/err")
    system("rm -rf " quote(dir) " </dev/null")
    delete JOBS[pid]
    reply("{\"return\": {\"exited\": true, \"exitcode\": " rc \
        (out != "" ? ", \"out-data\": \"" out "\"" : "") \
        (err != "" ? ", \"err-data\": \"" err "\"" : "") "}}")
}

function slurp64(path,    cmd, data) { # a file's bytes in base64, on one line
    cmd = "[ -s " quote(path) " ] && base64 <" quote(path) " | tr -d '\\n'"
    data = ""
    cmd | getline data
    close(cmd)
    return data
}
