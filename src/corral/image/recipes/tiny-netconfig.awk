# corral tiny test guest: flatten a cloud-init network-config (YAML) into "PATH VALUE" lines.
#
#   ethernets:                        ethernets/eth0/match/macaddress 52:54:00:12:34:56
#     eth0:                           ethernets/eth0/addresses/0 10.80.0.5/24
#       match: {macaddress: "52:.."}  ethernets/eth0/nameservers/addresses/0 10.80.0.1
#       addresses: [10.80.0.5/24]     ethernets/eth0/dhcp4 true
#
# Sequence items are numbered from 0. Handled: block mappings and sequences (items indented or
# not), one-line flow collections ([..] and {..}, nested), single and double quotes, comments.
# Not handled (the line is skipped): block scalars (| and >), anchors, flow collections spread
# over several lines. Keys are kept to [A-Za-z0-9_.:-] so that a PATH is one shell word.

function trim(s) {
    sub(/^[ \t]+/, "", s)
    sub(/[ \t\r]+$/, "", s)
    return s
}

# Text up to the comment, if any: a # at the start or after a blank, outside quotes (which
# open a scalar only where one starts: "it's" is no quote).
function uncomment(s,    i, c, q, out) {
    q = ""
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (q != "") {
            if (c == q) q = ""
        } else if ((c == "\"" || c == "'") && (i == 1 || index(" \t[{,", substr(s, i - 1, 1)))) {
            q = c
        } else if (c == "#" && (i == 1 || substr(s, i - 1, 1) ~ /[ \t]/)) {
            break
        }
        out = out c
    }
    return out
}

function unquote(s,    q, body) {
    s = trim(s)
    q = substr(s, 1, 1)
    if ((q == "\"" || q == "'") && length(s) >= 2 && substr(s, length(s), 1) == q) {
        body = substr(s, 2, length(s) - 2)
        if (q == "'") gsub(/''/, "'", body)
        else gsub(/\\"/, "\"", body)
        return body
    }
    return s
}

function clean_key(k) {
    k = unquote(k)
    gsub(/[^A-Za-z0-9_.:-]/, "_", k)
    return k
}

function emit(path, value) {
    gsub(/[\r\n]/, "", value)
    print path " " value
}

# The position of the ':' that ends a key in s (outside quotes, followed by a blank or the
# end), or 0 when s is not "key: ...".
function key_colon(s,    i, c, q) {
    q = ""
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (q != "") {
            if (c == q) q = ""
        } else if (c == "\"" || c == "'") {
            if (i == 1) q = c
        } else if (c == "[" || c == "{") {
            return 0
        } else if (c == ":" && (i == length(s) || substr(s, i + 1, 1) ~ /[ \t]/)) {
            return i
        }
    }
    return 0
}

# --- flow collections: a small recursive descent over the global F from position P ---------

function skip_blanks() {
    while (P <= length(F) && substr(F, P, 1) ~ /[ \t]/) P++
}

function flow_scalar(    start, c, q) {
    skip_blanks()
    c = substr(F, P, 1)
    if (c == "\"" || c == "'") {
        start = P
        P++
        while (P <= length(F)) {
            if (substr(F, P, 1) == c) {
                if (c == "'" && substr(F, P + 1, 1) == "'") { P += 2; continue }
                if (c == "\"" && substr(F, P - 1, 1) == "\\") { P++; continue }
                break
            }
            P++
        }
        P++
        return unquote(substr(F, start, P - start))
    }
    start = P
    while (P <= length(F)) {
        c = substr(F, P, 1)
        if (c == "," || c == "]" || c == "}") break
        if (c == ":" && (P == length(F) || index(" \t,]}", substr(F, P + 1, 1)))) break
        P++
    }
    return trim(substr(F, start, P - start))
}

function flow_value(path,    c, i, k) {
    skip_blanks()
    c = substr(F, P, 1)
    if (c == "[") {
        P++
        i = 0
        while (P <= length(F)) {
            skip_blanks()
            if (substr(F, P, 1) == "]") { P++; return }
            flow_value(path "/" i++)
            skip_blanks()
            if (substr(F, P, 1) == ",") P++
            else if (substr(F, P, 1) != "]") { P = length(F) + 1; return }
        }
    } else if (c == "{") {
        P++
        while (P <= length(F)) {
            skip_blanks()
            if (substr(F, P, 1) == "}") { P++; return }
            k = clean_key(flow_scalar())
            skip_blanks()
            if (substr(F, P, 1) == ":") { P++; flow_value(path "/" k) }
            skip_blanks()
            if (substr(F, P, 1) == ",") P++
            else if (substr(F, P, 1) != "}") { P = length(F) + 1; return }
        }
    } else {
        emit(path, flow_scalar())
    }
}

# A value after "key:" or "- ": a flow collection, a scalar, or nothing (a block follows).
function value(path, v) {
    v = trim(v)
    if (v == "") return 0
    if (v ~ /^[|>]/ || v ~ /^[&*!]/) return 1 # block scalars, anchors, tags: not ours
    if (v ~ /^[[{]/) { F = v; P = 1; flow_value(path); return 1 }
    emit(path, unquote(v))
    return 1
}

# --- the block structure: a stack of open containers -------------------------------------
# For each depth d: IND[d], the indentation of the line that opened it, PATH[d], ITEM[d] (1
# for a sequence item holding a mapping). COUNT[path] numbers a sequence's items.

function push(ind, path, item) {
    D++
    IND[D] = ind
    PATH[D] = path
    ITEM[D] = item
}

function top() {
    return D > 0 ? PATH[D] : ""
}

function join(parent, k) {
    return parent == "" ? k : parent "/" k
}

# "key: rest" at indentation ind, under the current top.
function key_line(s, ind,    c, k, path) {
    c = key_colon(s)
    if (c == 0) return
    k = clean_key(substr(s, 1, c - 1))
    path = join(top(), k)
    if (!value(path, substr(s, c + 1))) push(ind, path, 0)
}

BEGIN { D = 0 }

{
    line = uncomment($0)
    sub(/[ \t\r]+$/, "", line)
    if (line ~ /^[ \t]*$/ || line ~ /^(---|\.\.\.)/ || line ~ /^%/) next
    match(line, /^ */)
    ind = RLENGTH
    s = substr(line, ind + 1)
    dash = (s ~ /^-( |$)/)
    # Close what this line is not inside of. A "- " at a key's own indentation is that key's
    # item; one at an item's indentation is its next sibling.
    while (D > 0 && (IND[D] > ind || (IND[D] == ind && (!dash || ITEM[D])))) D--
    if (!dash) {
        key_line(s, ind)
        next
    }
    parent = top()
    n = COUNT[parent]++
    path = join(parent, n)
    s = trim(substr(s, 2))
    if (s == "") { push(ind, path, 1); next }
    if (key_colon(s)) {
        push(ind, path, 1)
        key_line(s, ind + match(substr(line, ind + 2), /[^ ]/))
        next
    }
    value(path, s)
}
