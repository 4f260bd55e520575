# JSON: the one reader and the one writer of the package.
#
# jsonlite's traps, and what json_text() does about each:
# - auto_unbox = TRUE turns every length-1 vector into a scalar: wrap a vector
#   that must stay an array in I() (or use json_array()).
# - list() is written [] and a named empty list {}: use json_object() for {}.
# - NULL would be written {}: it is written null (null = "null").
# - NA is written null (na = "null"), also inside arrays.
# - digits = NA or I(17) still prints 15 significant digits (0.1 + 0.2 comes
#   back as 0.3): doubles are formatted here with the shortest decimal that
#   round-trips (fmt_double()) and inserted verbatim. NaN and Inf have no JSON
#   form and are written null.
# - factors are written as their labels, POSIXct as RFC 3339 UTC text.
# The reader keeps every field (simplifyVector = FALSE): {} and [] stay apart
# (named vs unnamed empty list) and unknown fields round-trip.

#' An empty JSON object
#' @noRd
json_object <- function() stats::setNames(list(), character(0))

#' Mark a vector to be written as a JSON array even when of length 1
#' @noRd
json_array <- function(x) I(x)

#' Shortest decimal text that reads back to the same double
#'
#' Tries 15, 16 then 17 significant digits (17 always round-trips). NA is
#' `NA_character_`; NaN, Inf and -Inf are "NaN", "Inf", "-Inf".
#' @noRd
fmt_double <- function(x) {
  x <- as.double(x)
  out <- sprintf("%.15g", x)
  finite <- is.finite(x)
  bad <- which(finite)
  bad <- bad[as.double(out[bad]) != x[bad]]
  if (length(bad)) {
    out[bad] <- sprintf("%.16g", x[bad])
    bad <- bad[as.double(out[bad]) != x[bad]]
    if (length(bad)) out[bad] <- sprintf("%.17g", x[bad])
  }
  out[is.na(x) & !is.nan(x)] <- NA_character_
  out
}

# A double as JSON text: whole numbers up to 2^53 without exponent, others
# shortest round-trip, non-finite as null.
json_number <- function(x) {
  out <- fmt_double(x)
  whole <- is.finite(x) & x == trunc(x) & abs(x) <= 2^53
  out[whole] <- sprintf("%.0f", x[whole])
  out[!is.finite(x)] <- "null"
  out
}

fmt_timestamp_utc <- function(x) {
  us <- round(as.numeric(x) * 1e6)
  secs <- floor(us / 1e6)
  frac <- us - secs * 1e6
  out <- format(as.POSIXct(secs, origin = "1970-01-01", tz = "UTC"),
                "%Y-%m-%dT%H:%M:%S", tz = "UTC")
  has_frac <- !is.na(frac) & frac > 0
  out[has_frac] <- paste0(out[has_frac], ".", sprintf("%06.0f", frac[has_frac]))
  out <- paste0(out, "Z")
  out[is.na(x)] <- NA_character_
  out
}

json_prepare <- function(x) {
  if (is.null(x)) {
    return(NULL)
  }
  if (is.list(x) && !is.data.frame(x)) {
    nms <- names(x)
    out <- lapply(x, json_prepare)
    names(out) <- nms
    if (!is.null(nms) && length(x) == 0L) out <- json_object()
    return(out)
  }
  keep_array <- inherits(x, "AsIs") || length(x) != 1L
  if (inherits(x, "AsIs")) class(x) <- setdiff(class(x), "AsIs")
  if (is.factor(x)) x <- as.character(x)
  if (inherits(x, "POSIXct")) x <- fmt_timestamp_utc(x)
  if (is.double(x)) {
    txt <- json_number(x)
    txt <- if (keep_array) paste0("[", paste(txt, collapse = ","), "]") else txt
    return(structure(txt, class = "json"))
  }
  if (is.character(x)) x <- enc2utf8(x)
  if (keep_array) I(x) else x
}

#' Serialise an R value to JSON text (see the traps above)
#' @noRd
json_text <- function(x, pretty = TRUE) {
  txt <- jsonlite::toJSON(
    json_prepare(x),
    auto_unbox = TRUE, null = "null", na = "null", json_verbatim = TRUE,
    pretty = pretty, digits = NA
  )
  enc2utf8(as.character(txt))
}

#' Write JSON to a file atomically (UTF-8, trailing newline)
#' @noRd
json_write <- function(x, path, pretty = TRUE) {
  txt <- json_text(x, pretty = pretty)
  tmp <- paste0(path, ".tmp-", Sys.getpid())
  con <- file(tmp, open = "wb")
  on.exit(close(con))
  writeBin(charToRaw(paste0(txt, "\n")), con)
  close(con)
  on.exit()
  if (!file.rename(tmp, path)) {
    unlink(tmp)
    amb_abort("stage.failed", paste0("Could not write ", path, "."),
              "Check that the directory exists and is writable.")
  }
  invisible(path)
}

#' Parse JSON text keeping every field (no simplification)
#' @noRd
json_parse <- function(txt, what = "JSON text", code = "contract.invalid_document") {
  tryCatch(
    jsonlite::fromJSON(txt, simplifyVector = FALSE),
    error = function(e) {
      amb_abort(code, paste0(what, " is not valid JSON: ", conditionMessage(e)),
                "Write it with a JSON library; it must be UTF-8 JSON.")
    }
  )
}

#' Read a JSON file keeping every field
#' @noRd
json_read <- function(path, code = "contract.invalid_document") {
  if (!file.exists(path)) {
    amb_abort(code, paste0("No such file: ", path, "."),
              "Check the path; the writer may have failed before writing it.")
  }
  raw <- readBin(path, "raw", file.info(path)$size)
  txt <- rawToChar(raw)
  Encoding(txt) <- "UTF-8"
  json_parse(txt, what = path, code = code)
}
