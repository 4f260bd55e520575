# Typed tables (contract/SPEC.md section 3): column encoders and decoders.
#
# Text rules, one per contract type (missing is always an empty unquoted field):
#   integer    ^-?[0-9]+$                 R integer if all fit in 32 bits, else double
#                                         if all |x| <= 2^53, else contract.int64_overflow
#   double     round-trip decimal: 15 significant digits when they read back to
#              the same value, else 17; NaN, Inf, -Inf
#   string     the text; quoted when empty or holding , " \r \n ("" doubled)
#   boolean    true, false
#   timestamp  YYYY-MM-DDTHH:MM:SS[.ffffff]Z in UTC
#   category   the level's label, quoted as a string; levels live in the sidecar

table_types <- c("integer", "double", "string", "boolean", "timestamp", "category")

rx_integer <- "^-?[0-9]+$"
rx_double <- "^[-+]?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][-+]?[0-9]+)?$"
rx_timestamp <- "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,6})?Z$"

#' The sidecar path of a table CSV: data.csv -> data.schema.json
#' @noRd
table_sidecar_path <- function(path) {
  if (grepl("\\.csv$", path, ignore.case = TRUE)) {
    sub("\\.csv$", ".schema.json", path, ignore.case = TRUE)
  } else {
    paste0(path, ".schema.json")
  }
}

#' The contract type of an R column, or NA when it has none
#' @noRd
r_column_type <- function(x) {
  if (is.factor(x)) return("category")
  if (inherits(x, "POSIXct")) return("timestamp")
  if (inherits(x, c("Date", "difftime", "integer64"))) return(NA_character_)
  if (is.logical(x)) return("boolean")
  if (is.integer(x)) return("integer")
  if (is.double(x)) return("double")
  if (is.character(x)) return("string")
  NA_character_
}

#' A table schema (table.v1) inferred from a data frame
#'
#' Columns are nullable: a schema inferred from one sample must not refuse
#' the missing values of the next.
#' @noRd
infer_table_schema <- function(df) {
  cols <- lapply(names(df), function(nm) {
    x <- df[[nm]]
    type <- r_column_type(x)
    if (is.na(type)) {
      amb_abort("contract.type_mismatch",
                paste0("Column '", nm, "' has R class ", paste(class(x), collapse = "/"),
                       ", which has no contract type."),
                "Convert it: Date -> as.POSIXct(x, tz = 'UTC'), others -> double, character or factor.",
                column = nm)
    }
    col <- list(name = nm, type = type, nullable = TRUE)
    if (type == "category") col$levels <- I(levels(x))
    col
  })
  list(contract_version = 1L, row_count = nrow(df), columns = cols)
}

csv_quote <- function(s, always = FALSE) {
  need <- if (always) !is.na(s) else !is.na(s) & (s == "" | grepl("[,\"\r\n]", s, perl = TRUE))
  s[need] <- paste0("\"", gsub("\"", "\"\"", s[need], fixed = TRUE), "\"")
  s
}

#' Encode one column as CSV field text (NA stays NA: written as an empty field)
#' @noRd
encode_column <- function(x, col) {
  switch(col$type,
    integer = {
      if (is.double(x)) sprintf("%.0f", x) |> replace(is.na(x), NA) else as.character(x)
    },
    double = fmt_double_csv(x),
    string = csv_quote(enc2utf8(as.character(x))),
    category = csv_quote(enc2utf8(as.character(x))),
    boolean = ifelse(x, "true", "false"),
    timestamp = fmt_timestamp_utc(x)
  )
}

#' Encode one column for data.table::fwrite(quote = FALSE, na = "")
#'
#' Returns what fwrite writes byte for byte as the SPEC's field text, avoiding
#' a string per field where fwrite can do the work: integers as R integers,
#' categories and booleans as factors whose levels are the (quoted) labels.
#' Doubles are text here; write_typed_table() hands the columns that
#' `native_double_ok()` to fwrite as doubles itself and reads them back to
#' check them (fwrite has no option for more than 15 digits).
#' @noRd
encode_column_fwrite <- function(x, col) {
  switch(col$type,
    integer = if (is.integer(x)) as.vector(x) else encode_column(x, col),
    category = {
      x <- as.factor(x)
      levels(x) <- csv_quote(enc2utf8(levels(x)))
      structure(as.integer(x), levels = levels(x), class = "factor")
    },
    boolean = structure(as.integer(x) + 1L, levels = c("false", "true"), class = "factor"),
    encode_column(x, col)
  )
}

#' TRUE when fwrite's 15-significant-digit writer can write x exactly
#'
#' No NaN (fwrite writes it as missing), no -0 (written 0), no subnormal
#' (fwrite writes 5e-324 as 1.1125369292536e-308), and every finite value
#' equal to its 15-digit rounding. signif() is a cheap screen, not a proof:
#' the caller reads the written column back and compares bits.
#' @noRd
native_double_ok <- function(x) {
  if (!length(x)) return(TRUE)
  if (any(is.nan(x))) return(FALSE)
  fin <- x[is.finite(x)]
  if (!length(fin)) return(TRUE)
  a <- abs(fin)
  !any(a < 2.2250738585072014e-308 & (a > 0 | 1 / fin < 0)) && all(signif(fin, 15) == fin)
}

#' Doubles as CSV text: shortest of 15 significant digits when that reads
#' back to the same value, else 17 (`%.17g`, which always does); NaN, Inf,
#' -Inf spelled out; NA stays NA. `force17` (logical) skips the 15-digit try
#' for some cells (write_typed_table() sets it where fread misreads them).
#'
#' A value that needs exactly 16 digits is written with 17: readers compare
#' values, and skipping the 16-digit try halves the cost of formatting
#' full-precision doubles (one sprintf per value instead of two or three).
#' @noRd
fmt_double_csv <- function(x, force17 = NULL) {
  x <- as.double(x)
  out <- rep(NA_character_, length(x))
  fin <- is.finite(x)
  # signif() is exact for values that have 15 digits while the scaling power
  # of ten is exact (1e-8 <= |x| < 1e37); outside that, every value tries.
  a <- abs(x)
  short <- which(fin & (signif(x, 15) == x | a < 1e-8 | a >= 1e37) &
                   if (is.null(force17)) TRUE else !force17)
  if (length(short)) {
    s <- sprintf("%.15g", x[short])
    ok <- as.double(s) == x[short]
    # read_typed_table() parses with fread, which is not correctly rounded
    # either: a 15-digit text must read back through both.
    ok[ok] <- fread_double_text(s[ok]) == x[short][ok]
    out[short[ok]] <- s[ok]
  }
  long <- which(fin & is.na(out))
  if (length(long)) out[long] <- sprintf("%.17g", x[long])
  out[is.nan(x)] <- "NaN"
  out[!fin & !is.na(x)] <- ifelse(x[!fin & !is.na(x)] > 0, "Inf", "-Inf")
  out
}

# Decoders take field text (NA = missing) and return list(value, bad) where
# `bad` are the indices of fields that do not parse as the type.
decode_column <- function(s, col) {
  present <- !is.na(s)
  switch(col$type,
    integer = decode_integer(s, present),
    double = {
      ok <- !present | grepl(rx_double, s, perl = TRUE) | s %in% c("NaN", "Inf", "-Inf")
      v <- rep(NA_real_, length(s))
      v[present & ok] <- as.double(s[present & ok])
      list(value = v, bad = which(!ok))
    },
    string = {
      q <- present & grepl("\"", s, fixed = TRUE)
      # data.table 1.14.8's fread keeps the doubled quote of a quoted field
      # ("a""b" reads as a""b); a valid RFC 4180 field only holds " when quoted.
      s[q] <- gsub("\"\"", "\"", s[q], fixed = TRUE)
      list(value = s, bad = integer())
    },
    category = {
      q <- present & grepl("\"", s, fixed = TRUE)
      s[q] <- gsub("\"\"", "\"", s[q], fixed = TRUE)
      levels <- as.character(unlist(col$levels))
      bad <- which(present & !(s %in% levels))
      list(value = factor(s, levels = levels), bad = bad)
    },
    boolean = {
      ok <- !present | s %in% c("true", "false")
      list(value = ifelse(present & ok, s == "true", NA), bad = which(!ok))
    },
    timestamp = decode_timestamp(s, present)
  )
}

decode_integer <- function(s, present) {
  ok <- !present | grepl(rx_integer, s, perl = TRUE)
  v <- rep(NA_real_, length(s))
  v[present & ok] <- as.double(s[present & ok])
  # as.double rounds past 2^53 (2^53 + 1 reads as 2^53): compare the digits.
  big <- which(!is.na(v) & abs(v) >= 2^53)
  overflow <- integer()
  if (length(big)) {
    digits <- sub("^(-?)0+(?=[0-9])", "\\1", s[big], perl = TRUE)
    overflow <- big[abs(v[big]) > 2^53 | sprintf("%.0f", v[big]) != digits]
  }
  if (!length(overflow) && all(is.na(v) | abs(v) <= .Machine$integer.max)) {
    v <- as.integer(v)
  }
  list(value = v, bad = which(!ok), overflow = overflow)
}

decode_timestamp <- function(s, present) {
  ok <- !present | grepl(rx_timestamp, s, perl = TRUE)
  v <- rep(NA_real_, length(s))
  use <- which(present & ok)
  if (length(use)) {
    secs <- as.POSIXct(substr(s[use], 1L, 19L), format = "%Y-%m-%dT%H:%M:%S", tz = "UTC")
    frac <- ifelse(nchar(s[use]) > 20L, as.double(paste0("0", substr(s[use], 20L, nchar(s[use]) - 1L))), 0)
    v[use] <- as.double(secs) + frac
    ok[use[is.na(secs)]] <- FALSE
  }
  list(value = as.POSIXct(v, origin = "1970-01-01", tz = "UTC"), bad = which(!ok))
}

# Numeric text (no missing values) parsed by data.table::fread(), as
# read_typed_table() parses double columns; NA where fread cannot.
fread_double_text <- function(s) {
  if (!length(s)) return(double())
  tmp <- tempfile(fileext = ".csv")
  on.exit(unlink(tmp))
  writeLines(c("x", s), tmp, useBytes = TRUE)
  back <- tryCatch(
    suppressWarnings(data.table::fread(tmp, sep = ",", header = TRUE, colClasses = "double",
                                       na.strings = "", data.table = FALSE, showProgress = FALSE)),
    error = function(e) NULL
  )
  y <- if (is.null(back)) NULL else back[[1]]
  if (!is.double(y) || length(y) != length(s)) return(rep(NA_real_, length(s)))
  y
}

#' Coerce a data frame column to its contract type, losslessly, or fail
#'
#' Used by write_typed_table() with a schema and by scoring (SPEC 4.1):
#' integer <- integer, whole double within 2^53, digit text; double <- double,
#' integer, decimal text; string <- character, factor; category <- factor or
#' character (values outside the levels are reported, not coerced); boolean <-
#' logical, "true"/"false"; timestamp <- POSIXct (converted to UTC), RFC 3339
#' text. An all-missing logical column (JSON null) fits every type.
#' @noRd
coerce_column <- function(x, col, where = "") {
  type <- col$type
  fail <- function(bad) {
    sample <- format(x[bad[1]])
    amb_abort("contract.type_mismatch",
              paste0("Column '", col$name, "'", where, " should be ", type,
                     " but holds ", paste(class(x), collapse = "/"), " value '", sample, "'."),
              "Convert the column losslessly to the declared type before scoring; lossy casts are refused.",
              column = col$name, type = type, value = sample)
  }
  if (is.logical(x) && all(is.na(x)) && type != "boolean") {
    x <- switch(type, integer = rep(NA_integer_, length(x)), double = rep(NA_real_, length(x)),
                timestamp = as.POSIXct(rep(NA_real_, length(x)), origin = "1970-01-01", tz = "UTC"),
                rep(NA_character_, length(x)))
  }
  if (type %in% c("string", "category") && is.factor(x)) x <- as.character(x)
  if (is.character(x) && type %in% c("integer", "double", "boolean", "timestamp")) {
    dec <- decode_column(x, col)
    if (length(dec$bad)) fail(dec$bad)
    if (length(dec$overflow)) fail(dec$overflow)
    return(dec$value)
  }
  switch(type,
    integer = {
      if (is.integer(x)) return(x)
      if (is.double(x)) {
        bad <- which(!is.na(x) & (!is.finite(x) | x != trunc(x) | abs(x) > 2^53))
        if (length(bad)) fail(bad)
        return(if (all(is.na(x) | abs(x) <= .Machine$integer.max)) as.integer(x) else x)
      }
    },
    double = if (is.double(x) && !inherits(x, "POSIXct")) return(x) else if (is.integer(x) && !is.factor(x)) return(as.double(x)),
    string = if (is.character(x)) return(x),
    category = if (is.character(x)) {
      return(factor(x, levels = unique(c(as.character(unlist(col$levels)), x[!is.na(x)]))))
    },
    boolean = if (is.logical(x)) return(x),
    timestamp = if (inherits(x, "POSIXct")) return(as.POSIXct(as.double(x), origin = "1970-01-01", tz = "UTC"))
  )
  fail(which(!is.na(x))[1] %|na|% 1L)
}

`%|na|%` <- function(x, y) if (length(x) == 0L || is.na(x)) y else x
