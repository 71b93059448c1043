"""The reference Weir order plugin, in Python: the same rules as `plugins/orders` (Rust).

Built into a WebAssembly component with `componentize-py` against `wit/` (world
`weir:orders/plugin`). Validation reports every violation at once; pricing reads the catalog,
applies the optional discount and tax from the plugin configuration with half-up rounding in
integer minor units; like the Rust plugin, an amount above MAX_AMOUNT (2**53 - 1, the largest
the host stores) is refused as an AMOUNT_TOO_LARGE violation, and so is an intermediate result
past the 64-bit range. The lifecycle follows the host's status graph.

It must decide exactly as the Rust plugin, messages included: `tests/it/python.rs` compares
every decision on a corpus of cases, and the API suites run with it. `describe` reports the
version `0.1.0-python`, so orders show which of the two decided them. The build
(`plugins/python/artifacts`) pins the `componentize-py` whose generated modules this imports.
"""

import unicodedata

import wit_world
from componentize_py_types import Err
from wit_world.imports import catalog, config, deadline, log, types

# The largest amount the host accepts (`weir_sdk::MAX_AMOUNT`): exact in a JSON double.
MAX_AMOUNT = 2**53 - 1
# The Rust plugin computes in i64: a line total past it names the line, like there.
I64_MAX = 2**63 - 1
# The Rust plugin reads `discount.percent_bps` and `tax.rate_bps` as u32 and
# `discount.min_subtotal` as u64: a larger value is a configuration error there too.
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
BPS = 10_000
DEFAULT_CURRENCIES = "USD,EUR,GBP"
MAX_LINES = 100
QUANTITY = (1, 1000)
MAX_SKU_LEN = 64
CUSTOMER_PREFIX = "cus_"
CUSTOMER_SUFFIX_LEN = (3, 40)
MAX_METADATA_ENTRIES = 20
MAX_METADATA_KEY_BYTES = 64
MAX_METADATA_VALUE_BYTES = 512


def _err(e):
    return Err(e)


def _invalid(violations):
    return _err(types.OrderError_Invalid(violations))


def _rejected(reason, message):
    return _err(types.OrderError_Rejected(types.Rejection(reason, message)))


def _internal(message):
    return _err(types.OrderError_Internal(message))


def _unavailable(message):
    return _err(types.OrderError_Unavailable(message))


# Rust's `char::is_whitespace` (Unicode White_Space), what `str::trim` removes. Python's
# `str.strip()` also removes U+001C..U+001F, which Rust keeps.
_WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def _trim(s):
    start, end = 0, len(s)
    while start < end and s[start] in _WHITE_SPACE:
        start += 1
    while end > start and s[end - 1] in _WHITE_SPACE:
        end -= 1
    return s[start:end]


def _debug(s):
    """`s` quoted and escaped as Rust's `{:?}` prints a `str` (messages match the Rust plugin's)."""
    out = ['"']
    for c in s:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c.isprintable() and not _grapheme_extend(c):
            out.append(c)
        else:
            out.append(f"\\u{{{ord(c):x}}}")
    out.append('"')
    return "".join(out)


_ESCAPES = {"\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"'}


def _grapheme_extend(c):
    # Unicode Grapheme_Extend is mostly the combining marks (Mn, Me); Rust escapes those in
    # `{:?}` so a message never starts a line with a mark that joins the quote.
    return c > "\x7f" and unicodedata.category(c) in ("Mn", "Me")


def _parse(key, default, limit):
    """The value of `key` as Rust's `u32`/`u64::from_str` after `trim` reads it: an optional `+`
    and ASCII digits, at most `limit`; anything else is an `internal` error naming the key."""
    raw = config.get(key)
    if raw is None:
        return default
    text = _trim(raw)
    digits = text[1:] if text.startswith("+") else text
    if not digits or not all("0" <= c <= "9" for c in digits) or int(digits) > limit:
        raise _internal(
            f"config key {key} has an invalid value {_debug(raw)}: expected a non-negative integer"
        )
    return int(digits)


class Settings:
    def __init__(self):
        raw = config.get("currencies")
        if raw is None:
            raw = DEFAULT_CURRENCIES
        self.currencies = [t for t in (_trim(c) for c in raw.split(",")) if t]
        self.discount_bps = _parse("discount.percent_bps", 0, U32_MAX)
        if self.discount_bps > BPS:
            raise _internal(
                f"config key discount.percent_bps must be at most {BPS}, got {self.discount_bps}"
            )
        self.discount_min_subtotal = min(_parse("discount.min_subtotal", 0, U64_MAX), I64_MAX)
        self.tax_bps = _parse("tax.rate_bps", 0, U32_MAX)


def _token(s):
    return all(c.isascii() and (c.isalnum() or c in "_-") for c in s)


def _is_sku(sku):
    return 0 < len(sku.encode()) <= MAX_SKU_LEN and _token(sku)


def _is_customer(cid):
    if not cid.startswith(CUSTOMER_PREFIX):
        return False
    rest = cid[len(CUSTOMER_PREFIX):]
    lo, hi = CUSTOMER_SUFFIX_LEN
    return lo <= len(rest.encode()) <= hi and _token(rest)


def _v(field, code, message):
    return types.Violation(field, code, message)


def _truncate(s, max_bytes):
    """At most `max_bytes` bytes of `s`, cut on a character boundary."""
    return s.encode()[:max_bytes].decode(errors="ignore")


def validate(request, settings):
    out = []
    if not _is_customer(request.customer_id):
        lo, hi = CUSTOMER_SUFFIX_LEN
        out.append(_v("customer_id", "INVALID_FORMAT",
                      f'must be "{CUSTOMER_PREFIX}" followed by {lo}..={hi} characters of A-Z, a-z, 0-9, _ or -'))
    if request.currency not in settings.currencies:
        out.append(_v("currency", "UNSUPPORTED",
                      f'currency {_debug(request.currency)} is not supported; supported: {", ".join(settings.currencies)}'))
    lines = request.lines
    if not lines:
        out.append(_v("lines", "REQUIRED", "an order needs at least one line"))
    elif len(lines) > MAX_LINES:
        out.append(_v("lines", "TOO_MANY", f"at most {MAX_LINES} lines are allowed, got {len(lines)}"))
    else:
        first = {}
        for i, line in enumerate(lines):
            if not _is_sku(line.sku):
                out.append(_v(f"lines[{i}].sku", "INVALID_FORMAT",
                              f"must be 1..={MAX_SKU_LEN} characters of A-Z, a-z, 0-9, _ or -"))
            elif line.sku in first:
                out.append(_v(f"lines[{i}].sku", "DUPLICATE",
                              f"sku {line.sku} already appears in lines[{first[line.sku]}]"))
            else:
                first[line.sku] = i
            lo, hi = QUANTITY
            if not lo <= line.quantity <= hi:
                out.append(_v(f"lines[{i}].quantity", "OUT_OF_RANGE",
                              f"must be between {lo} and {hi}, got {line.quantity}"))
    if len(request.metadata) > MAX_METADATA_ENTRIES:
        out.append(_v("metadata", "TOO_LARGE",
                      f"at most {MAX_METADATA_ENTRIES} entries are allowed, got {len(request.metadata)}"))
    else:
        for key, value in request.metadata:
            if not key:
                out.append(_v("metadata", "INVALID_FORMAT", "keys must not be empty"))
            if len(key.encode()) > MAX_METADATA_KEY_BYTES:
                out.append(_v("metadata", "TOO_LARGE",
                              f"key {_debug(_truncate(key, 16))}... is longer than {MAX_METADATA_KEY_BYTES} bytes"))
            if len(value.encode()) > MAX_METADATA_VALUE_BYTES:
                out.append(_v("metadata", "TOO_LARGE",
                              f"value of key {_debug(_truncate(key, MAX_METADATA_KEY_BYTES))} is longer than {MAX_METADATA_VALUE_BYTES} bytes"))
    return out


def _too_large(field, what):
    return _invalid([_v(field, "AMOUNT_TOO_LARGE",
                        f"the {what} is larger than the host accepts ({MAX_AMOUNT} minor units)")])


def _apply_bps(amount, bps):
    value = (amount * bps + BPS // 2) // BPS
    return value if value <= I64_MAX else None


def _money(amount, currency):
    return types.Money(amount, currency)


def _catalog_error(sku, error):
    if isinstance(error, types.DependencyError_Timeout):
        return _unavailable(f"catalog lookup of sku {sku} timed out")
    if isinstance(error, types.DependencyError_Unavailable):
        return _unavailable(f"catalog unavailable looking up sku {sku}: {error.value}")
    return _internal(f"catalog failed looking up sku {sku}: {error.value}")


def price(request, settings):
    currency = request.currency
    lines = []
    subtotal = 0
    for i, line in enumerate(request.lines):
        try:
            product = catalog.get(line.sku)
        except Err as e:
            raise _catalog_error(line.sku, e.value)
        if product is None:
            raise _rejected("UNKNOWN_SKU", f"unknown sku {line.sku}")
        if product.stock < line.quantity:
            raise _rejected("INSUFFICIENT_STOCK",
                            f"sku {line.sku}: {line.quantity} requested, {product.stock} in stock")
        if product.unit_price.currency != currency:
            raise _rejected("CURRENCY_MISMATCH",
                            f"sku {line.sku} is priced in {product.unit_price.currency}, the order is in {currency}")
        if product.unit_price.amount < 0:
            raise _internal(f"catalog returned a negative price for sku {line.sku}")
        line_total = product.unit_price.amount * line.quantity
        if line_total > I64_MAX:
            raise _too_large(f"lines[{i}].quantity", "line total")
        subtotal += line_total
        if subtotal > I64_MAX:
            raise _too_large("lines", "subtotal")
        lines.append(types.PricedLine(line.sku, line.quantity, product.unit_price,
                                      _money(line_total, currency)))
    # The host accepts amounts up to MAX_AMOUNT; every other amount is at most the subtotal
    # or the total.
    if subtotal > MAX_AMOUNT:
        raise _too_large("lines", "subtotal")
    discount = 0
    if subtotal >= settings.discount_min_subtotal:
        discount = _apply_bps(subtotal, settings.discount_bps)
        if discount is None:
            raise _too_large("lines", "discount")
    taxable = subtotal - discount
    tax = _apply_bps(taxable, settings.tax_bps)
    if tax is None:
        raise _too_large("lines", "tax")
    total = taxable + tax
    if total > MAX_AMOUNT:
        raise _too_large("lines", "total")
    return types.PricedOrder(lines, _money(subtotal, currency), _money(discount, currency),
                             _money(tax, currency), _money(total, currency))


_STATUS = {types.OrderStatus.PLACED: "placed", types.OrderStatus.PAID: "paid",
           types.OrderStatus.SHIPPED: "shipped", types.OrderStatus.CANCELLED: "cancelled"}
_EVENT = {types.OrderEvent.PAYMENT_CAPTURED: "payment-captured",
          types.OrderEvent.SHIPPED: "shipped", types.OrderEvent.CANCEL_REQUESTED: "cancel-requested"}


class WitWorld(wit_world.WitWorld):
    def describe(self):
        return types.PluginInfo("orders", "0.1.0-python", [
            types.Capability.LOG, types.Capability.CATALOG, types.Capability.CONFIG,
            types.Capability.DEADLINE])

    def place_order(self, request):
        settings = Settings()
        violations = validate(request, settings)
        if violations:
            raise _invalid(violations)
        if deadline.remaining_ms() < 1:
            raise _unavailable("deadline too close")
        priced = price(request, settings)
        log.emit(log.Level.INFO, "order priced", [
            ("lines", str(len(priced.lines))), ("total", str(priced.total.amount)),
            ("currency", priced.total.currency)])
        return priced

    def transition(self, order, event):
        s, e = order.status, event
        S, E = types.OrderStatus, types.OrderEvent
        if s == S.PLACED and e == E.PAYMENT_CAPTURED:
            return S.PAID
        if s == S.PAID and e == E.SHIPPED:
            return S.SHIPPED
        if s in (S.PLACED, S.PAID, S.CANCELLED) and e == E.CANCEL_REQUESTED:
            return S.CANCELLED
        raise _err(types.OrderError_Conflict(
            f"event {_EVENT[e]} does not apply to an order in status {_STATUS[s]}"))
