#!/usr/bin/env python3
"""Reference encoder for bloomlink `.clk` files, written from docs/FORMAT.md ("Encoding a
record"): Python 3.11+, standard library only. Slow (pure-Python ChaCha20): it is there to check
that the document specifies the encoding, not to encode exports.

    SOURCE_DATE_EPOCH=0 python3 docs/reference-encoder.py KEY SCHEMA.toml MAP.toml IN.csv OUT.clk

writes the unsigned (version 1) file `bloomlink encode` writes with the same SOURCE_DATE_EPOCH.
SCHEMA is a schema file (`bloomlink schema default > default.toml` for the built-in one).
Not implemented: --opaque-ids, signing, the rejects file, the summary and its checks.
"""
import csv, datetime, decimal, hashlib, hmac, io, itertools, json, os, re, struct, sys, tomllib
import unicodedata

CARGO_TOML = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'Cargo.toml')
try:  # written in the header: the version of the source tree this file is in
    TOOL_VERSION = tomllib.load(open(CARGO_TOML, 'rb'))['package']['version']
except OSError:
    TOOL_VERSION = '0.1.0'


# ---- key file and subkeys ----
def load_key(path):
    meta, secret = {}, None
    for line in open(path, encoding='utf-8-sig').read().splitlines():
        line = line.rstrip(' \t\r')
        if line.startswith('#') and ':' in line:
            k, v = line[1:].split(':', 1)
            meta[k.strip()] = v.strip()
        elif line.startswith('bloomlink-key-1:'):
            secret = line
    _, hex_secret, check = secret.split(':')
    key = bytes.fromhex(hex_secret)
    names = ('created', 'expires', 'partnership', 'purpose', 'epoch', 'previous', 'retired')
    msg = b'bloomlink key check v1\n' + b''.join(f'{k}={meta[k]}\n'.encode() for k in names if k in meta)
    if sign(key, msg)[:8].hex() != check:
        sys.exit(f'{path}: the check value does not match')
    return key, int(meta['epoch'])

def sign(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()

def subkey(key, label):  # HKDF-SHA256, 32 bytes
    return sign(sign(b'bloomlink hkdf salt v1', key), label.encode() + b'\x01')

def chacha20(seed):  # the u64 stream of rand_chacha's ChaCha20Rng::from_seed(seed)
    key = list(struct.unpack('<8I', seed))
    for counter in itertools.count():
        init = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574, *key, counter % 2 ** 32, counter >> 32, 0, 0]
        s = list(init)
        for _ in range(10):
            for a, b, c, d in ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                               (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)):
                for x, y, z, r in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
                    s[x] = (s[x] + s[y]) & 0xffffffff
                    v = s[z] ^ s[x]
                    s[z] = ((v << r) | (v >> (32 - r))) & 0xffffffff
        w = [(p + q) & 0xffffffff for p, q in zip(s, init)]
        yield from (w[i] | w[i + 1] << 32 for i in range(0, 16, 2))

def below(rng, n):
    return (next(rng) * n) >> 64

def stream(key, label, msg):  # ChaCha20(seed = HMAC(subkey(label), msg))
    return chacha20(sign(subkey(key, label), msg))


# ---- normalisers: a canonical value, None (missing) or BAD (invalid) ----
BAD = object()
WS = '\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000' + ''.join(map(chr, range(0x2000, 0x200b)))
NULLS = {'', '-', '--', '.', '?', 'NULL', 'NONE', 'N/A', 'NA', 'NK', 'N/K', 'NOT KNOWN', 'UNKNOWN',
         'UNK', 'NOT STATED', 'TBC', 'XX', '<NA>', '#N/A', '#NULL!', '(BLANK)', '#NAME?', '#VALUE!', '#REF!',
         'NOT RECORDED', 'NOT GIVEN', 'NOT PROVIDED', 'REFUSED', 'WITHHELD', 'NO NAME', 'ANONYMOUS'}
CASED_NULLS = {'nan', 'NaN'}  # as written: pandas' and R's missing number (Nan, NAN are names)
INVISIBLE = set('\u00ad\u061c\u180e\ufeff') | {
    chr(c) for a, b in ((0x200b, 0x200f), (0x202a, 0x202e), (0x2060, 0x2064), (0x2066, 0x206f))
    for c in range(a, b + 1)}
DROP = set("'`\u00b4\u02b9\u02bb\u02bc\u02bd\u2018\u2019\u201b\u2032\uff07") | INVISIBLE
FOLD = {c: rep for rep, cs in (
    ('L', 'ŁłĿŀȽƚⱢɫ'), ('O', 'ØøƟɵ'), ('D', 'ĐđÐðƉɖȡ'), ('TH', 'Þþ'), ('SS', 'ßẞ'), ('AE', 'Ææ'),
    ('OE', 'Œœ'), ('I', 'ıƗɨ'), ('H', 'Ħħ'), ('T', 'Ŧŧ'), ('K', 'ĸ'), ('B', 'Ƀƀ'), ('R', 'Ɍɍ'),
    ('U', 'Ʉʉ'), ('Z', 'Ƶƶ'), ('G', 'Ǥǥ'), ('J', 'Ɉɉ'), ('F', 'Ƒƒ'), ('NG', 'Ŋŋ')) for c in cs}
HEADS = 'BABY BABYBOY BABYGIRL INFANT NEWBORN TWIN TRIPLET UNNAMED UNBORN UNKNOWN'.split()
TAILS = set('BOY GIRL MALE FEMALE A B C D I II III ONE TWO THREE FIRST SECOND THIRD CHILD'.split() + HEADS)
UP, DIG, UPN_LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', '0123456789', 'ABCDEFGHJKLMNPQRTUVWXYZ'
DEFAULT_SEX = {**dict.fromkeys(['M', 'MALE', 'BOY', 'MAN'], 'M'),
               **dict.fromkeys(['F', 'FEMALE', 'GIRL', 'WOMAN'], 'F'),
               **dict.fromkeys(['U', 'UNKNOWN', 'X', 'I', 'N', 'NOT KNOWN', 'NOT STATED', 'INDETERMINATE'],
                               'U')}

def is_null(s):
    return s.isascii() and s.upper() in NULLS or s in CASED_NULLS

def prepared(normalise):  # the common prelude: length, trimming, null markers
    def run(raw, *args):
        if len(raw.encode()) > 256:
            return BAD
        s = raw.strip(WS)
        return None if is_null(s) else normalise(s, *args)
    return run

def dropped(raw):  # without invisible format characters (unless too long to normalise)
    return raw if len(raw.encode()) > 256 else ''.join(c for c in raw if c not in INVISIBLE)

def visible(normalise):  # identifiers and dates: invisible format characters dropped first
    return lambda raw, *args: normalise(dropped(raw), *args)

def name_chars(c, top=True):  # one character: letters to keep, None for a separator
    mark = lambda x: unicodedata.category(x)[0] == 'M' or x in DROP
    alpha = lambda x: x.isalpha() or unicodedata.category(x) == 'Nl'  # Unicode Alphabetic
    if c.isascii():
        return [] if c in "'`" else [c.upper() if c.isalpha() else None]
    if c in DROP or not top and mark(c):
        return []
    if c in FOLD:
        return list(FOLD[c])
    if top:
        return [x for d in unicodedata.normalize('NFKD', c) for x in name_chars(d, False)]
    if not alpha(c):
        return [None]
    return [x for u in c.upper() for v in unicodedata.normalize('NFKD', u)
            for x in (FOLD.get(v) or ([v] if not mark(v) and alpha(v) and not v.islower() else []))]

def name_words(s):
    words = ' '.join(''.join(x or ' ' for c in s for x in name_chars(c)).split())
    return BAD if not words or len(words.encode()) > 256 else words

def name_kept(raw):  # a name listed in the column map's [missing] keep: no marker lists apply
    return BAD if len(raw.encode()) > 256 else name_words(raw.strip(WS))

@prepared
def name(s):
    words = name_words(s)
    if words is BAD:
        return BAD
    w = words.split(' ')
    placeholder = w[0] in HEADS and (w[1:2] == ['OF'] or all(x in TAILS for x in w[1:]))
    return None if is_null(words) or words in ('N A', 'N K') or placeholder else words

def compact(s, most):  # ASCII letters and digits, upper-cased, whitespace dropped
    c = [ch for ch in s if ch not in WS]
    return ''.join(c).upper() if len(c) <= most and all(ch.isascii() and ch.isalnum() for ch in c) else BAD

@visible
@prepared
def postcode(s):
    c = compact(s, 7)
    if c is not BAD and (c == 'NFA' or len(c) == 7 and c.startswith('ZZ99')):
        return None
    if c is BAD or len(c) < 5:
        return BAD
    o, i = c[:-3], c[-3:]
    first, second, inward = set(UP) - set('QVX'), set(UP) - set('IJZ'), set(UP) - set('CIKMOV')
    ok = i[0] in DIG and i[1] in inward and i[2] in inward and o[0] in first and (
        len(o) == 2 and o[1] in DIG
        or len(o) == 3 and (o[2] in DIG and (o[1] in DIG or o[1] in second)
                            or o[1] in DIG and o[2] in 'ABCDEFGHJKPSTUW')
        or len(o) == 4 and o[1] in second and o[2] in DIG and (o[3] in DIG or o[3] in 'ABEHMNPRVWXY'))
    return o + ' ' + i if ok or c == 'GIR0AA' else BAD

@visible
@prepared
def nhs_number(s):
    s = s[:-2] if s.endswith('.0') else s  # a number that went through a spreadsheet as a float
    d = [c for c in s if c not in WS + '-.\u2010\u2011\u2012\u2013\u2014\u2015\u2212']
    if len(d) != 10 or any(c not in DIG for c in d):
        return BAD
    if len(set(d)) == 1:
        return None
    check = (11 - sum(int(x) * w for x, w in zip(d, range(10, 1, -1))) % 11) % 11
    return ''.join(d) if check != 10 and check == int(d[9]) else BAD

@visible
@prepared
def upn(s):
    u = compact(s, 13)
    if u is BAD or len(u) != 13 or u[0] not in UP or any(c not in DIG for c in u[1:12]) \
            or u[12] not in DIG + UPN_LETTERS:
        return BAD
    last = int(u[12]) if u[12] in DIG else UPN_LETTERS.index(u[12])
    total = sum(int(x) * w for x, w in zip(u[1:12], range(2, 13))) + 13 * last
    return u if UPN_LETTERS[total % 23] == u[0] else BAD

MONTHS = 'january february march april may june july august september october november december'.split()
ABBR = [(m[:3], i + 1) for i, m in enumerate(MONTHS)]
ABBR.insert(8, ('sept', 9))
TIME = re.compile(r'(?P<h>\d{1,2})(?::(?P<m>\d\d)(?::\d\d(?:[.,]\d{1,9})?)?|\.(?P<m2>\d\d)\.\d\d(?:[.,]\d{1,9})?)'
                  r' *(?P<z>[Zz]|[+-]\d\d(?::\d\d|\d{0,2})|[AaPp][Mm])?', re.ASCII)  # Oracle's dots need seconds

def uk_date(d, hour, minute):  # the date in the UK (GMT/BST) of a UTC time on d
    if hour != 23 or minute > 59:
        return d
    sunday_on_or_before = lambda x: x - datetime.timedelta(days=(x.weekday() + 1) % 7)
    start = sunday_on_or_before(datetime.date(d.year, 3, 31))
    end = sunday_on_or_before(datetime.date(d.year, 10, 31 if d.year >= 1996 else 28))
    return d + datetime.timedelta(days=1) if start <= d < end else d

def match_date(fmt, s, ymd, pivot):  # the first way the format matches all of s with a real date
    if not fmt:
        try:  # year 0 (a leap year) stands in as 4: before 1990 either way
            return None if s else datetime.date(ymd[0] or 4, ymd[1], ymd[2])
        except ValueError:
            return None
    f, rest = fmt[0], fmt[1:]
    digits = lambda n: len(s) >= n and all(c in DIG for c in s[:n])
    if f[0] != '%' or f == '%%':
        lit = f.replace('%%', '%')
        return match_date(rest, s[len(lit):], ymd, pivot) if s.startswith(lit) else None
    if f in ('%d', '%m'):
        k = 2 if f == '%d' else 1
        return next(filter(None, (match_date(rest, s[n:], ymd[:k] + (int(s[:n]),) + ymd[k + 1:], pivot)
                                  for n in (2, 1) if digits(n))), None)
    if f in ('%Y', '%y'):
        n = 4 if f == '%Y' else 2
        if not digits(n):
            return None
        y = int(s[:n])
        y += 0 if n == 4 else pivot - pivot % 100 - (100 if y > pivot % 100 else 0)
        return match_date(rest, s[n:], (y,) + ymd[1:], pivot)
    names = ABBR if f == '%b' else [(x, i + 1) for i, x in enumerate(MONTHS)]
    return next(filter(None, (match_date(rest, s[len(nm):], (ymd[0], m, ymd[2]), pivot) for nm, m in names
                              if s[:len(nm)].isascii() and s[:len(nm)].lower() == nm)), None)

@visible
@prepared
def date_of_birth(s, formats, today):
    if s == 'NaT':  # pandas' missing date, as written (Nat is a name elsewhere)
        return None
    parse = lambda t: next(filter(None, (match_date(f, t, (0, 0, 0), today.year) for f in formats)), None)
    d, latest = parse(s), today
    for i, c in enumerate(s):
        t = TIME.fullmatch(s[i + 1:].lstrip(WS)) if c in ' Tt:' else None  # ':' after SAS dates
        if d is None and t and s[:i].rstrip(WS):
            d = parse(s[:i].rstrip(WS))
            zone = t['z'] or ''
            if d is not None and (zone in ('Z', 'z') or zone[:1] in '+-' and zone and set(zone[1:]) <= set('0:')):
                uk = uk_date(d, int(t['h']), int(t['m'] or t['m2']))
                latest, d = today + (uk - d), uk  # past 23:00 UTC in summer the UK is a day on
    return BAD if d is None or d < datetime.date(1990, 1, 1) or d > latest else d

def sex(raw, codes):
    t = raw.strip(WS)
    if not t or is_null(t.upper()) or t in CASED_NULLS:
        return None
    v = codes.get(t, codes.get(t.upper()))
    return BAD if v is None else None if v == 'U' else v

def text(raw):
    if raw.strip(WS) in CASED_NULLS:
        return None
    t = ' '.join(w.upper() for w in re.split(f'[{WS}]+', raw) if w)
    return None if is_null(t) else t


# ---- part texts, tokens and positions ----
SOUNDEX = {c: d for d, cs in (('1', 'BFPV'), ('2', 'CGJKQSXZ'), ('3', 'DT'), ('4', 'L'), ('5', 'MN'),
                              ('6', 'R'), ('h', 'HW')) for c in cs}

def soundex(v):
    w = v.split(' ')[0]
    if not w or w[0] not in UP:
        return w[:4] or None
    out, last = w[0], SOUNDEX.get(w[0], '0')
    for c in w[1:]:
        k = SOUNDEX.get(c, '0')
        if len(out) < 4 and k != 'h':
            out += k if k not in ('0', last) else ''
            last = k
    return out.ljust(4, '0')

def part_text(v, transform):
    return {'value': lambda: v.isoformat() if isinstance(v, datetime.date) else v,
            'year': lambda: f'{v.year:04}', 'initial': lambda: v[:1] or None,
            'soundex': lambda: soundex(v), 'outward': lambda: v.split(' ')[0]}[transform]()

def tokens(v, tokeniser):
    if tokeniser == 'bigrams':
        return [p[i:i + 2] for w in v.split(' ') if w for p in ['_' + w + '_'] for i in range(len(p) - 1)]
    if tokeniser == 'date_parts':
        y, m, d = f'{v.year:04}', f'{v.month:02}', f'{v.day:02}'
        return [f'y:{y}', f'm:{m}', f'd:{d}', f'ym:{y}-{m}', f'ymd:{y}-{m}-{d}',
                'dm:' + '-'.join(sorted((d, m)))]
    if tokeniser == 'postcode_parts':
        o, i = v.split(' ')
        return [f'pc:{o}{i}', f'sec:{o} {i[0]}', f'out:{o}', 'area:' + re.match('[A-Z]*', o).group()]
    return ['=' + part_text(v, 'value')]

def positions(key, msg, k, bits, hashing):
    if hashing == 'double':
        h1, h2 = struct.unpack_from('<QQ', sign(key, msg))
        return [((h1 + i * (h2 | 1)) % 2 ** 64) % bits for i in range(k)]
    blocks = (sign(key, msg + (bytes([0, b]) if b else b'')) for b in range((k + 15) // 16))
    values = [v for block in blocks for v in struct.unpack('<16H', block)]
    return [(v * bits) >> 16 for v in values[:k]]


# ---- records ----
class Encoder:
    def __init__(self, key, schema, cmap):
        self.key, self.s, self.h, self.agency = key, schema, schema.get('hardening', {}), cmap['agency']
        self.fields = {f['name']: f for f in schema['field']}
        self.seg_bits = {sg['name']: sg['bits'] for sg in schema['segment']}
        self.seg_key = {n: subkey(key, f'bloomlink/v1/segment/{n}') for n in self.seg_bits}
        self.tok_key = [subkey(key, f'bloomlink/v1/token/{t["name"]}') for t in schema.get('token', [])]
        formats = cmap.get('date_formats', ['%Y-%m-%d', '%d/%m/%Y', '%d-%b-%Y'])
        parts = [re.findall(r'%.|[^%]+', f) for f in formats]
        for f, p in zip(formats, parts):  # what bloomlink refuses in a map, refused here too
            fields = [x for x in p if x[0] == '%' and x != '%%']
            if ''.join(p) != f or any(x not in ('%d', '%m', '%Y', '%y', '%b', '%B') for x in fields) or \
                    sorted({'%d': 'd', '%m': 'm', '%b': 'm', '%B': 'm', '%Y': 'y', '%y': 'y'}[x] for x in fields) \
                    != ['d', 'm', 'y']:
                sys.exit(f'date format {f!r}: refused (see docs/FORMAT.md "Normalisation")')
        # Values are read without invisible characters: a format's literal text too.
        lit = lambda x: x if x[0] == '%' else ''.join(c for c in x if c not in INVISIBLE)
        formats = [[lit(x) for x in p if lit(x)] for p in parts]
        codes = {k.strip(WS).upper(): v for k, v in cmap.get('sex_codes', DEFAULT_SEX).items()}
        today = datetime.datetime.now(datetime.timezone.utc).date()
        self.normalisers = {'name': name, 'postcode': postcode, 'nhs_number': nhs_number, 'upn': upn,
                            'text': text, 'date': lambda r: date_of_birth(r, formats, today),
                            'sex': lambda r: sex(dropped(r), codes)}
        missing = cmap.get('missing', {})  # the export's own missing values, and names kept
        extra, keep = ({v.strip(WS).upper() for v in missing.get(k, [])} for k in ('extra', 'keep'))
        for kind, normalise in list(self.normalisers.items()):
            def listed(raw, kind=kind, normalise=normalise):
                t = (dropped(raw) if kind in ('postcode', 'nhs_number', 'upn', 'date', 'sex') else raw).strip(WS).upper()
                if t in extra:
                    return None
                return name_kept(raw) if kind == 'name' and t in keep else normalise(raw)
            self.normalisers[kind] = listed
        self.plans = {}

    def stored_bits(self, bits):
        factor = self.h['diffusion'].get('output_factor', 1) if 'diffusion' in self.h else 1
        return bits * factor * (2 if self.h.get('balance') else 1) // (2 if self.h.get('xor_fold') else 1)

    def plan(self, seg, bits):  # diffusion's selections and balancing's permutation, once per segment
        if seg not in self.plans:
            sel = perm = None
            if 'diffusion' in self.h:
                rng = stream(self.key, f'bloomlink/v1/harden/diffusion/{seg}', b'selection')
                t = self.h['diffusion']['t']
                sel = []
                for _ in range(bits * self.h['diffusion'].get('output_factor', 1)):
                    sel.append([])
                    while len(sel[-1]) < t:  # t distinct inputs, redrawn on repeats
                        i = below(rng, bits)
                        sel[-1] += [] if i in sel[-1] else [i]
                bits = len(sel)
            if self.h.get('balance'):
                rng = stream(self.key, f'bloomlink/v1/harden/balance/{seg}', b'permutation')
                perm = list(range(2 * bits))
                for i in range(2 * bits - 1, 0, -1):
                    j = below(rng, i + 1)
                    perm[i], perm[j] = perm[j], perm[i]
            self.plans[seg] = sel, perm
        return self.plans[seg]

    def harden(self, seg, bits):
        if not any(bits):
            return [0] * self.stored_bits(len(bits))
        sel, perm = self.plan(seg, len(bits))
        if sel:
            bits = [sum(bits[i] for i in chosen) & 1 for chosen in sel]
        if perm:
            out = [0] * len(perm)
            for i, b in enumerate(bits + [1 - b for b in bits]):
                out[perm[i]] = b
            bits = out
        if self.h.get('xor_fold'):
            bits = [a ^ b for a, b in zip(bits[:len(bits) // 2], bits[len(bits) // 2:])]
        return bits

    def record(self, rid, vals):
        """(filter bytes, popcounts, tokens) of one row, or None if too few fields set bits."""
        salt_def, salt = self.h.get('salt'), None
        if salt_def:
            f, _, tr = salt_def['value'].partition(':')
            salt = None if vals.get(f) is None else part_text(vals[f], tr or 'value')
        salted = lambda f: salt_def and f['name'] in salt_def['fields']
        skipped = lambda f: salted(f) and salt is None and salt_def.get('when_missing') == 'skip'
        used = [f for f in self.s['field']
                if f.get('bits_per_token', 0) > 0 and vals.get(f['name']) is not None and not skipped(f)]
        if len(used) < self.s.get('min_fields', 2):
            return None
        raw = {n: [0] * b for n, b in self.seg_bits.items()}
        for f in used:
            for t in tokens(vals[f['name']], f['tokeniser']):
                msg = (b'\x1f' + (salt or '').encode() + b'\x1f' if salted(f) else b'') + t.encode()
                for p in positions(self.seg_key[f['segment']], msg, f['bits_per_token'],
                                   self.seg_bits[f['segment']], self.s.get('hashing', 'random')):
                    raw[f['segment']][p] = 1
        segs = [self.harden(n, bits) for n, bits in raw.items()]
        if 'blip' in self.h:
            threshold = min(max(int(self.h['blip']['flip_probability'] * 65536 + 0.5), 1), 32768)
            rng = stream(self.key, 'bloomlink/v1/harden/blip', f'{self.agency}\x1f{rid}'.encode())
            noise = (x >> s & 0xffff for x in rng for s in (0, 16, 32, 48))
            for bits in filter(any, segs):
                for i in range(len(bits)):
                    bits[i] ^= next(noise) < threshold
        toks = []
        for kind, t in enumerate(self.s.get('token', [])):
            parts = [part_text(vals[f], tr or 'value') if vals.get(f) is not None else None
                     for f, _, tr in (p.partition(':') for p in t['parts'])]
            if None not in parts:
                h = struct.unpack('<Q', sign(self.tok_key[kind], '\x1f'.join(parts).encode())[:8])[0]
                toks.append(h & (2 ** 56 - 1) | kind << 56)
        flat = [b for s in segs for b in s]
        filter_bytes = int(''.join(map(str, reversed(flat))), 2).to_bytes(len(flat) // 8, 'little')
        return filter_bytes, [sum(flat)] + [sum(s) for s in segs], sorted(toks)

def encode(key, schema, cmap, data):
    """The records (row reference, filter, popcounts, tokens) of an export, and rows read."""
    enc, encoding = Encoder(key, schema, cmap), cmap.get('encoding', 'utf-8')

    def decode(field):  # None for bytes invalid in the encoding (WHATWG windows-1252 has none)
        b = field.encode('utf-8', 'surrogateescape')
        if 0 in b:  # a NUL byte is no text (UTF-16, or NUL padding)
            return None
        if encoding == 'windows-1252':
            return ''.join(chr(x) if x in (0x81, 0x8d, 0x8f, 0x90, 0x9d) else bytes([x]).decode('cp1252')
                           for x in b)
        try:
            return b.decode('utf-8')
        except UnicodeDecodeError:
            return None

    decoded = data.removeprefix(b'\xef\xbb\xbf').decode('utf-8', 'surrogateescape')
    delimiter = cmap.get('delimiter', ',').replace('\\t', '\t')
    rows = csv.reader(io.StringIO(decoded, newline=''), delimiter=delimiter)
    header = [decode(h).strip(WS) for h in next(rows)]
    id_col, cols = header.index(cmap['record_id']), {f: header.index(c) for f, c in cmap['columns'].items()}
    rows = [r for r in rows if r]  # blank lines are not rows
    # Data rows that end with a delimiter the header lacks: decided per export, from the first 100
    # rows holding more than delimiters and ASCII spaces (a lone row of that shape elsewhere is
    # a value with an unquoted delimiter, its columns shifted).
    sample = [r for r in rows if not all(not f.strip(' \t\n\x0c\r') for f in r)][:100]
    if len(header) > 1 and header[-1] == '' and \
            sum(len(r) == len(header) - 1 for r in sample) > sum(len(r) == len(header) for r in sample):
        header.pop()  # a header ending with a delimiter, over rows without: no last column
    trailing = sum(len(r) == len(header) + 1 and r[-1] == '' for r in sample) \
        > sum(len(r) == len(header) for r in sample)
    recs, seen, rows_read = [], set(), 0
    for row in rows:
        rows_read += 1
        shaped = len(row) == len(header) or trailing and len(row) == len(header) + 1 and row[-1] == ''
        rid = decode(row[id_col]) if shaped else None
        swallowed = lambda v: ('\n' in v or '\r' in v) and v.count(delimiter) + 1 >= len(header)
        repeats_header = rid is not None and all(  # two exports joined: the header again
            (v := decode(c)) is not None and v.lstrip('\ufeff').strip(WS) == h for c, h in zip(row, header))
        if rid is None or any(swallowed(row[c]) for c in (id_col, *cols.values())) or repeats_header \
                or not rid.strip(WS) or len(rid.strip(WS).encode()) > 256 \
                or any(decode(row[c]) is None for c in cols.values()):  # unclosed_quote, ...
            continue
        rid, vals = rid.strip(WS), {}
        for f, c in cols.items():
            too_long = len(row[c].encode('utf-8', 'surrogateescape')) > 256
            v = BAD if too_long else enc.normalisers[enc.fields[f]['normaliser']](decode(row[c]))
            vals[f] = None if v is BAD else v
        r = enc.record(rid, vals)
        if r is not None and rid not in seen:
            seen.add(rid)
            recs.append((rid, *r))
    return enc, recs, rows_read


# ---- the file ----
def ryu(x):  # a float as serde_json writes it: shortest round trip, in ryu's layout
    sign_, digits, exp = decimal.Decimal(repr(x)).normalize().as_tuple()
    d, kk = ''.join(map(str, digits)), len(digits) + exp
    if 0 <= exp and kk <= 16:
        t = d + '0' * exp + '.0'
    elif 0 < kk <= 16:
        t = d[:kk] + '.' + d[kk:]
    elif -5 < kk <= 0:
        t = '0.' + '0' * -kk + d
    else:
        t = d[0] + ('.' + d[1:] if len(d) > 1 else '') + f'e{kk - 1}'
    return '-' * sign_ + t

def canonical(v):  # JSON with keys sorted and no spaces
    if isinstance(v, dict):
        return '{' + ','.join(json.dumps(k) + ':' + canonical(v[k]) for k in sorted(v)) + '}'
    if isinstance(v, list):
        return '[' + ','.join(map(canonical, v)) + ']'
    return ryu(v) if isinstance(v, float) else json.dumps(v, ensure_ascii=False)

def schema_digest(schema):
    d = {'hashing': 'random', 'min_fields': 2, 'token': [],
         **{k: v for k, v in schema.items() if k != 'hardening'},
         'field': [{'segment': None, 'bits_per_token': 0, **f} for f in schema['field']]}
    h = {k: v for k, v in schema.get('hardening', {}).items() if v is not False}
    if 'salt' in h:
        h['salt'] = {'when_missing': 'marker', **h['salt']}
    if 'diffusion' in h:
        h['diffusion'] = {'output_factor': 1, **h['diffusion']}
    if 'blip' in h:
        h['blip'] = {'flip_probability': float(h['blip']['flip_probability'])}
    if h:
        d['hardening'] = h
    return hashlib.sha256(canonical({'bloomlink_schema_canonical': 1, 'schema': d}).encode()).hexdigest()

def write_clk(path, key, epoch, schema, cmap, enc, recs, rows_read, data):
    u32, u64 = (lambda v: struct.pack('<I', v)), (lambda v: struct.pack('<Q', v))
    string = lambda t: u64(len(t.encode())) + t.encode()
    pad = lambda b: b + bytes(-len(b) % 64)
    ids = [r[0].encode() for r in recs]
    sections = [b''.join(map(u64, itertools.accumulate(map(len, ids), initial=0))), b''.join(ids),
                b''.join(r[1] for r in recs), b''.join(struct.pack(f'<{len(r[2])}H', *r[2]) for r in recs),
                b''.join(map(u32, itertools.accumulate((len(r[3]) for r in recs), initial=0))),
                b''.join(u64(t) for r in recs for t in r[3])]
    stored = [(sg['name'], enc.stored_bits(sg['bits'])) for sg in schema['segment']]
    starts = list(itertools.accumulate((b for _, b in stored), initial=0))
    epoch_secs = int(os.environ.get('SOURCE_DATE_EPOCH') or 0)
    created = datetime.datetime.fromtimestamp(epoch_secs, datetime.timezone.utc)
    header = lambda table: b''.join([
        string(cmap['agency']), string(created.strftime('%Y-%m-%dT%H:%M:%SZ')), string(TOOL_VERSION),
        string(sign(key, b'bloomlink key fingerprint v1')[:8].hex()), u32(epoch), string(schema['name']),
        string(schema_digest(schema)), u32(starts[-1]), u64(len(stored)),
        *(string(n) + u32(a) + u32(b) for (n, b), a in zip(stored, starts)),
        u64(len(enc.tok_key)), *(string(t['name']) for t in schema.get('token', [])),
        u64(len(recs)), u64(rows_read), u64(rows_read - len(recs)), string(hashlib.sha256(data).hexdigest()),
        b'\x00', *(u64(o) + u64(n) for o, n in table)])
    at, table = len(pad(bytes(16 + len(header([(0, 0)] * 6))))), []
    for sec in sections:
        table.append((at, len(sec)))
        at += len(pad(sec))
    h = header(table)
    body = pad(b'BLOOMLNK' + u32(1) + u32(len(h)) + h) + b''.join(map(pad, sections[:-1])) + sections[-1]
    open(path, 'wb').write(body + hashlib.sha256(body).digest())


if __name__ == '__main__':
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    key, epoch = load_key(sys.argv[1])
    schema, cmap = tomllib.load(open(sys.argv[2], 'rb')), tomllib.load(open(sys.argv[3], 'rb'))
    data = open(sys.argv[4], 'rb').read()
    enc, recs, rows_read = encode(key, schema, cmap, data)
    write_clk(sys.argv[5], key, epoch, schema, cmap, enc, recs, rows_read, data)
