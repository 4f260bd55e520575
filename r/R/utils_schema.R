# A JSON Schema subset interpreter, so contract/schemas/*.json stay the single
# source of truth for both SDKs.
#
# Supported keywords (anything else is reported by schema_unsupported_keywords(),
# and a test fails when a shipped schema uses one):
#   type (string or array), enum, const, required, properties,
#   additionalProperties (boolean or schema), patternProperties, items,
#   minItems, maxItems, minimum, maximum, exclusiveMinimum, exclusiveMaximum,
#   minLength, maxLength, pattern (PCRE), anyOf, oneOf, allOf, not,
#   $ref to "#/$defs/<name>" (or "#/definitions/<name>").
# Annotations ignored on purpose: $schema, $id, $comment, title, description,
# default, examples, format (as in Python's jsonschema without a format checker).
#
# Documents are parsed with simplifyVector = FALSE: an object is a named list
# ({} is a named empty list), an array an unnamed list.

schema_keywords <- c(
  "type", "enum", "const", "required", "properties", "additionalProperties",
  "patternProperties", "items", "minItems", "maxItems", "minimum", "maximum",
  "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
  "anyOf", "oneOf", "allOf", "not", "$ref", "$defs", "definitions",
  "$schema", "$id", "$comment", "title", "description", "default", "examples",
  "format"
)

json_type_of <- function(x) {
  if (is.null(x)) return("null")
  if (is.list(x)) return(if (is.null(names(x))) "array" else "object")
  if (length(x) != 1L) return("array")
  if (is.logical(x)) return(if (is.na(x)) "null" else "boolean")
  if (is.character(x)) return("string")
  if (is.numeric(x)) return("number")
  "unknown"
}

json_is_type <- function(x, type) {
  actual <- json_type_of(x)
  if (type == "integer") {
    return(actual == "number" && is.finite(x) && x == trunc(x))
  }
  actual == type
}

json_equal <- function(a, b) {
  # two scalars (the usual enum / const case) compare without serialising: a string equals only a
  # string, a boolean only a boolean, numbers by value (1 and 1.0 are one JSON number)
  if (is.atomic(a) && is.atomic(b) && length(a) == 1L && length(b) == 1L && !is.na(a) && !is.na(b) &&
      is.null(names(a)) && is.null(names(b))) {
    if (is.character(a) || is.character(b)) return(is.character(a) && is.character(b) && a == b)
    if (is.logical(a) || is.logical(b)) return(is.logical(a) && is.logical(b) && a == b)
    if (is.numeric(a) && is.numeric(b)) return(a == b)
  }
  identical(json_text(a, pretty = FALSE), json_text(b, pretty = FALSE))
}

schema_resolve_ref <- function(ref, root) {
  m <- regmatches(ref, regexec("^#/(\\$defs|definitions)/([^/]+)$", ref))[[1]]
  if (length(m) != 3L || is.null(root[[m[2]]][[m[3]]])) {
    amb_abort("contract.invalid_document",
              paste0("Unsupported or unknown $ref '", ref, "' in a contract schema."),
              "Only references to #/$defs/<name> are supported.")
  }
  root[[m[2]]][[m[3]]]
}

#' Every violation of `schema` by `x`, as "path: message" strings
#' @noRd
schema_errors <- function(x, s, root = s, path = "$") {
  if (isTRUE(s)) return(character())
  if (isFALSE(s)) return(paste0(path, ": is not allowed here"))
  errs <- character()
  add <- function(msg) errs <<- c(errs, paste0(path, ": ", msg))
  if (!is.null(s[["$ref"]])) {
    errs <- c(errs, schema_errors(x, schema_resolve_ref(s[["$ref"]], root), root, path))
  }
  if (!is.null(s[["type"]])) {
    types <- unlist(s[["type"]])
    if (!any(vapply(types, function(t) json_is_type(x, t), logical(1)))) {
      return(c(errs, paste0(path, ": expected ", paste(types, collapse = " or "),
                            ", got ", json_type_of(x))))
    }
  }
  if (!is.null(s[["enum"]]) && !any(vapply(s[["enum"]], json_equal, logical(1), b = x))) {
    add(paste0("must be one of ", json_text(s[["enum"]], pretty = FALSE)))
  }
  if ("const" %in% names(s) && !json_equal(s[["const"]], x)) {
    add(paste0("must equal ", json_text(s[["const"]], pretty = FALSE)))
  }
  type <- json_type_of(x)
  if (type == "object") errs <- c(errs, schema_object_errors(x, s, root, path))
  if (type == "array") errs <- c(errs, schema_array_errors(x, s, root, path))
  if (type == "string") errs <- c(errs, schema_string_errors(x, s, path))
  if (type == "number") errs <- c(errs, schema_number_errors(x, s, path))
  c(errs, schema_combinator_errors(x, s, root, path))
}

schema_object_errors <- function(x, s, root, path) {
  errs <- character()
  missing <- setdiff(unlist(s[["required"]]), names(x))
  if (length(missing)) {
    errs <- c(errs, paste0(path, ": missing required field '", missing, "'"))
  }
  props <- s[["properties"]] %||% list()
  pprops <- s[["patternProperties"]] %||% list()
  for (key in names(x)) {
    sub <- paste0(path, ".", key)
    matched <- FALSE
    if (key %in% names(props)) {
      matched <- TRUE
      errs <- c(errs, schema_errors(x[[key]], props[[key]], root, sub))
    }
    for (pat in names(pprops)) {
      if (grepl(pat, key, perl = TRUE)) {
        matched <- TRUE
        errs <- c(errs, schema_errors(x[[key]], pprops[[pat]], root, sub))
      }
    }
    if (!matched && !is.null(s[["additionalProperties"]])) {
      if (isFALSE(s[["additionalProperties"]])) {
        errs <- c(errs, paste0(sub, ": unknown field (additionalProperties is false)"))
      } else {
        errs <- c(errs, schema_errors(x[[key]], s[["additionalProperties"]], root, sub))
      }
    }
  }
  errs
}

schema_array_errors <- function(x, s, root, path) {
  errs <- character()
  n <- length(x)
  if (!is.null(s[["minItems"]]) && n < s[["minItems"]]) {
    errs <- c(errs, paste0(path, ": needs at least ", s[["minItems"]], " items"))
  }
  if (!is.null(s[["maxItems"]]) && n > s[["maxItems"]]) {
    errs <- c(errs, paste0(path, ": allows at most ", s[["maxItems"]], " items"))
  }
  if (!is.null(s[["items"]]) && n > 0L) {
    for (i in seq_len(n)) {
      errs <- c(errs, schema_errors(x[[i]], s[["items"]], root, paste0(path, "[", i - 1L, "]")))
    }
  }
  errs
}

schema_string_errors <- function(x, s, path) {
  errs <- character()
  n <- nchar(x, type = "chars")
  if (!is.null(s[["minLength"]]) && n < s[["minLength"]]) {
    errs <- c(errs, paste0(path, ": shorter than ", s[["minLength"]], " characters"))
  }
  if (!is.null(s[["maxLength"]]) && n > s[["maxLength"]]) {
    errs <- c(errs, paste0(path, ": longer than ", s[["maxLength"]], " characters"))
  }
  if (!is.null(s[["pattern"]]) && !grepl(s[["pattern"]], x, perl = TRUE)) {
    errs <- c(errs, paste0(path, ": '", x, "' does not match ", s[["pattern"]]))
  }
  errs
}

schema_number_errors <- function(x, s, path) {
  errs <- character()
  chk <- function(ok, msg) if (!isTRUE(ok)) errs <<- c(errs, paste0(path, ": ", msg))
  if (!is.null(s[["minimum"]])) chk(x >= s[["minimum"]], paste0("must be >= ", s[["minimum"]]))
  if (!is.null(s[["maximum"]])) chk(x <= s[["maximum"]], paste0("must be <= ", s[["maximum"]]))
  if (!is.null(s[["exclusiveMinimum"]])) chk(x > s[["exclusiveMinimum"]], paste0("must be > ", s[["exclusiveMinimum"]]))
  if (!is.null(s[["exclusiveMaximum"]])) chk(x < s[["exclusiveMaximum"]], paste0("must be < ", s[["exclusiveMaximum"]]))
  errs
}

schema_combinator_errors <- function(x, s, root, path) {
  errs <- character()
  for (sub in s[["allOf"]]) errs <- c(errs, schema_errors(x, sub, root, path))
  if (!is.null(s[["anyOf"]])) {
    ok <- vapply(s[["anyOf"]], function(sub) !length(schema_errors(x, sub, root, path)), logical(1))
    if (!any(ok)) errs <- c(errs, paste0(path, ": matches none of anyOf"))
  }
  if (!is.null(s[["oneOf"]])) {
    ok <- vapply(s[["oneOf"]], function(sub) !length(schema_errors(x, sub, root, path)), logical(1))
    if (sum(ok) != 1L) {
      errs <- c(errs, paste0(path, ": must match exactly one of oneOf (matches ", sum(ok), ")"))
    }
  }
  if (!is.null(s[["not"]]) && !length(schema_errors(x, s[["not"]], root, path))) {
    errs <- c(errs, paste0(path, ": matches a schema it must not match"))
  }
  errs
}

#' Keywords used in a schema that this interpreter does not know
#' @noRd
schema_unsupported_keywords <- function(s) {
  found <- character()
  walk <- function(node, in_props = FALSE) {
    if (!is.list(node)) return(invisible())
    if (!is.null(names(node))) {
      if (!in_props) found <<- c(found, setdiff(names(node), schema_keywords))
      for (key in names(node)) {
        walk(node[[key]], in_props = !in_props &&
               key %in% c("properties", "patternProperties", "$defs", "definitions"))
      }
    } else {
      for (el in node) walk(el)
    }
  }
  walk(s)
  unique(found)
}

schema_cache <- new.env(parent = emptyenv())

#' Where the contract schemas are read from
#'
#' `options(ambidex.contract_dir)`, else the environment variable
#' `AMBIDEX_CONTRACT_DIR` (a contract folder holding `schemas/`, or the schemas
#' folder itself), else the copy shipped in the package (`inst/contract/schemas`).
#' @noRd
contract_schema_dir <- function() {
  dir <- getOption("ambidex.contract_dir", Sys.getenv("AMBIDEX_CONTRACT_DIR", ""))
  if (nzchar(dir)) {
    return(if (dir.exists(file.path(dir, "schemas"))) file.path(dir, "schemas") else dir)
  }
  system.file("contract", "schemas", package = "ambidex")
}

load_contract_schema <- function(kind, schema_dir = contract_schema_dir()) {
  path <- file.path(schema_dir, paste0(kind, ".v1.json"))
  key <- normalizePath(path, mustWork = FALSE)
  mtime <- file.mtime(path)
  hit <- schema_cache[[key]]
  if (!is.null(hit) && identical(hit$mtime, mtime)) return(hit$schema)
  if (!file.exists(path)) {
    amb_abort("stage.runtime_missing",
              paste0("No contract schema '", kind, "' at ", path, "."),
              "Reinstall the R package from r/, or set AMBIDEX_CONTRACT_DIR to the repository's contract/ folder.")
  }
  schema <- json_read(path)
  assign(key, list(mtime = mtime, schema = schema), envir = schema_cache)
  schema
}
