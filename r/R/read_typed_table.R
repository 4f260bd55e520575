#' Read a typed table (CSV plus schema sidecar)
#'
#' Implements contract/SPEC.md section 3 with `data.table::fread()` (an empty
#' unquoted field is missing, `""` is the empty string). Integer and double
#' columns are parsed by fread directly; a column it cannot parse as its type,
#' or a numeric column with missing values, is read again as text and decoded
#' field by field, so a value that does not parse fails with
#' `contract.invalid_table` naming the file, line and column. (fread's number
#' parser also takes a few spellings the text decoder refuses, e.g. `+5`,
#' `inf`, `nan`, blanks around a number.)
#' Integers become R integers when all fit in 32 bits, doubles when all
#' |x| <= 2^53, and otherwise fail with `contract.int64_overflow` naming the
#' column. Categories become factors with the sidecar's levels in order;
#' timestamps POSIXct in UTC.
#'
#' @param path Path of the CSV file.
#' @param schema The table schema as a list; by default the sidecar
#'   `<name>.schema.json` beside `<name>.csv`.
#' @return A data.frame.
#' @export
#' @examples
#' path <- tempfile(fileext = ".csv")
#' write_typed_table(data.frame(id = 1:2, plan = factor(c("b", NA), c("a", "b"))), path)
#' read_typed_table(path)
read_typed_table <- function(path, schema = NULL) {
  if (is.null(schema)) schema <- json_read(table_sidecar_path(path))
  validate_document("table", schema)
  cols <- schema$columns
  names_expected <- vapply(cols, function(c) c$name, character(1))
  if (!file.exists(path)) {
    amb_abort("contract.invalid_table", paste0("No table file ", path, "."),
              "Check the input path; the stage that writes it may have failed.", file = path)
  }
  types <- vapply(cols, function(c) c$type, character(1))
  dt <- fread_typed(path, types)
  if (!identical(names(dt), names_expected)) {
    amb_abort("contract.invalid_table",
              paste0(path, " line 1: header [", paste(names(dt), collapse = ","),
                     "] differs from the schema's columns [", paste(names_expected, collapse = ","), "]."),
              "Write the CSV and its sidecar together (write_typed_table()).", file = path, line = 1L)
  }
  if (!is.null(schema$row_count) && nrow(dt) != schema$row_count) {
    amb_abort("contract.invalid_table",
              paste0(path, ": ", nrow(dt), " rows but the sidecar says row_count ", schema$row_count, "."),
              "The file was truncated or edited; write it again.", file = path)
  }
  # Columns fread could not give as their type, and numeric columns with
  # missing values (fread reads `""` as missing there too), are read again as
  # text for the exact per-field decoder, which names line and column.
  again <- which(vapply(seq_along(cols), function(j) !native_column_ok(dt[[j]], types[j]), logical(1)))
  if (length(again)) {
    text <- fread_text(path, length(cols), select = again)
    for (k in seq_along(again)) {
      j <- again[k]
      s <- text[[k]]
      v <- dt[[j]]
      if (types[j] %in% c("integer", "double") && (is.integer(v) || is.double(v)) &&
          !inherits(v, "integer64") && identical(is.na(s), is.na(v) & !is.nan(v))) {
        dt[[j]] <- if (types[j] == "double") as.double(v) else v
      } else {
        dt[[j]] <- s
      }
    }
  }
  out <- lapply(seq_along(cols), function(j) {
    x <- dt[[j]]
    if (is.character(x)) decode_checked(x, cols[[j]], path) else native_checked(x, cols[[j]], path)
  })
  names(out) <- names_expected
  structure(out, class = "data.frame", row.names = .set_row_names(nrow(dt)))
}

# Read integer and double columns with fread's own parsers (no string per
# field), the others as text. Any warning (a value that is not a number, a
# malformed record) makes it a plain text read, whose decoder reports the
# exact line and column.
fread_typed <- function(path, types) {
  numeric <- types %in% c("integer", "double")
  if (!any(numeric) || file.size(path) == 0L) return(fread_text(path, length(types)))
  classes <- ifelse(types == "integer", "integer", ifelse(types == "double", "double", "character"))
  dt <- fread_quiet(
    path, sep = ",", quote = "\"", header = TRUE, colClasses = classes,
    na.strings = "", strip.white = FALSE, fill = FALSE, blank.lines.skip = FALSE,
    encoding = "UTF-8", data.table = FALSE, showProgress = FALSE, check.names = FALSE
  )
  if (is.null(dt) || length(dt) != length(types)) return(fread_text(path, length(types)))
  for (j in which(!numeric)) if (!is.character(dt[[j]])) dt[[j]] <- as.character(dt[[j]])
  dt
}

# fread() that returns NULL on any warning or error. Warnings are muffled, not
# turned into a jump out of fread: interrupting it leaves its session state
# behind and the next fread() warns about that.
fread_quiet <- function(...) {
  warned <- FALSE
  out <- tryCatch(
    withCallingHandlers(data.table::fread(...), warning = function(w) {
      warned <<- TRUE
      invokeRestart("muffleWarning")
    }),
    error = function(e) NULL
  )
  if (warned) NULL else out
}

# TRUE when fread's column needs no second look: the right R type, and for
# integer/double no missing value (which could have been a quoted "").
native_column_ok <- function(v, type) {
  switch(type,
    integer = is.integer(v) && !anyNA(v),
    double = (is.double(v) || is.integer(v)) && !inherits(v, "integer64") && !anyNA(v[!is.nan(v)]),
    is.character(v)
  )
}

# The checks decode_checked() makes, for a column fread parsed as a number.
native_checked <- function(v, col, path) {
  if (col$type == "double") v <- as.double(v)
  missing <- is.na(v) & !is.nan(v)
  if (isFALSE(col$nullable) && any(missing)) {
    i <- which(missing)[1]
    amb_abort("contract.type_mismatch",
              paste0("Column '", col$name, "' of ", path, " is not nullable but line ",
                     i + 1L, " is missing."),
              "Fill the value, or declare the column nullable in the schema.",
              file = path, column = col$name)
  }
  v
}

fread_text <- function(path, ncol, select = NULL) {
  if (file.size(path) == 0L) {
    return(stats::setNames(list(), character()))
  }
  dt <- withCallingHandlers(
    tryCatch(
      data.table::fread(
        path, sep = ",", quote = "\"", header = TRUE, colClasses = "character",
        na.strings = "", strip.white = FALSE, fill = FALSE, blank.lines.skip = FALSE,
        encoding = "UTF-8", data.table = FALSE, showProgress = FALSE, check.names = FALSE,
        select = select
      ),
      error = function(e) {
        amb_abort("contract.invalid_table", paste0(path, " is not a valid CSV: ", conditionMessage(e)),
                  "Write it with write_typed_table() or the Python SDK.", file = path)
      }
    ),
    warning = function(w) {
      amb_abort("contract.invalid_table", paste0(path, " is not a valid CSV: ", conditionMessage(w)),
                "Write it with write_typed_table() or the Python SDK.", file = path)
    }
  )
  # fread returns an all-missing column as logical even with colClasses.
  for (j in seq_along(dt)) if (!is.character(dt[[j]])) dt[[j]] <- as.character(dt[[j]])
  dt
}

.set_row_names <- function(n) if (n > 0L) c(NA_integer_, -n) else integer()

decode_checked <- function(s, col, path) {
  dec <- decode_column(s, col)
  if (length(dec$bad)) {
    i <- dec$bad[1]
    amb_abort("contract.invalid_table",
              paste0(path, " line ", i + 1L, ", column '", col$name, "': '", s[i],
                     "' is not a valid ", col$type,
                     if (col$type == "category") " (not one of the sidecar's levels)" else "", "."),
              "See contract/SPEC.md section 3 for the text of each type.",
              file = path, line = i + 1L, column = col$name)
  }
  if (length(dec$overflow)) {
    i <- dec$overflow[1]
    amb_abort("contract.int64_overflow",
              paste0("Column '", col$name, "' of ", path, " holds ", s[i],
                     " (line ", i + 1L, "), beyond 2^53: R cannot hold it exactly."),
              "Store such identifiers as string columns.", file = path, column = col$name)
  }
  missing <- is.na(dec$value) & !(is.double(dec$value) & is.nan(dec$value))
  if (isFALSE(col$nullable) && any(missing)) {
    i <- which(missing)[1]
    amb_abort("contract.type_mismatch",
              paste0("Column '", col$name, "' of ", path, " is not nullable but line ",
                     i + 1L, " is missing."),
              "Fill the value, or declare the column nullable in the schema.",
              file = path, column = col$name)
  }
  dec$value
}
