/*
 * qr_errors.c: the text of every QR_ERR_* code.
 *
 * The strings are constant, short and free of any data from a request, so
 * the coordinator may copy them into a ServiceReply sent to an untrusted
 * peer, and a shell may print them as they are. Every code of enum
 * qr_error_code has its own line; anything else is "unknown error".
 */
#include "querier/querier.h"

const char *qr_strerror(int code)
{
    switch (code) {
    case QR_OK:
        return "success";
    case QR_ERR_SQL:
        return "the SQL does not parse or does not type-check";
    case QR_ERR_NOMEM:
        return "out of memory";
    case QR_ERR_MALFORMED:
        return "malformed message";
    case QR_ERR_TOO_LARGE:
        return "message too large";
    case QR_ERR_WRONG_QUERY:
        return "message for another query";
    case QR_ERR_CLOSED:
        return "collection is closed";
    case QR_ERR_DUPLICATE:
        return "duplicate contribution";
    case QR_ERR_BAD_UPLOAD:
        return "upload of the wrong shape";
    case QR_ERR_UNKNOWN_TASK:
        return "unknown task";
    case QR_ERR_BAD_RESULT:
        return "task result of the wrong shape";
    case QR_ERR_FAILED:
        return "the query failed";
    case QR_ERR_NOT_DONE:
        return "the query is not done";
    case QR_ERR_SIGNATURE:
        return "signature does not verify";
    case QR_ERR_DECRYPT:
        return "decryption failed";
    case QR_ERR_ARG:
        return "invalid argument";
    case QR_ERR_CRYPTO:
        return "cryptographic library failure";
    case QR_ERR_NOT_ADMITTED:
        return "this connection is not admitted for that token";
    case QR_ERR_UNTRUSTED:
        return "certificate not issued by a trusted authority";
    case QR_ERR_CHALLENGE:
        return "no such challenge (replayed, stale or from another connection)";
    case QR_ERR_REFUSED:
        return "plan refused";
    case QR_ERR_FULL:
        return "the service holds as many queries as it may";
    case QR_ERR_UNKNOWN_QUERY:
        return "no such query";
    default:
        return "unknown error";
    }
}
