"""Rampart's built-in Python runtime (the counterpart of AWS's managed python3.x).

Rampart starts it as ``python3 /path/to/bootstrap.py`` with cwd = LAMBDA_TASK_ROOT
and AWS_LAMBDA_RUNTIME_API, _HANDLER and the usual AWS_LAMBDA_* variables set
(a handler given as argv[1] wins over _HANDLER, as with ``python -m awslambdaric``).
It imports the handler once, then serves invocations from the Lambda Runtime API
until the platform stops the process.

CPython never caches the bytecode of a script it runs, so compiling this file
costs ~3.5 ms on every cold start. Running a precompiled copy instead
(``python3 -m py_compile`` per interpreter version, then ``python3 bootstrap.pyc``)
behaves identically and skips that cost.

Error types and messages, log formats and the ``context`` object follow AWS's
Python runtime interface client (awslambdaric) so unmodified handlers behave as
they do on AWS.

Standard library only, Python 3.8+. Cold start matters, so imports are kept to a
minimum: the Runtime API is spoken over a raw ``_socket`` (http.client would pull
in email.* and socket.py adds selectors/enum), JSON goes straight through the C
accelerator ``_json`` (the json package imports ``re``), and ``logging`` /
``traceback`` are only loaded when user code or an error needs them.
"""

import _socket
import os
import sys
import time

try:
    import _json
except ImportError:  # interpreters without the C accelerator use the json package
    _json = None

_API_PREFIX = "/2018-06-01/runtime"
# This file as it appears in tracebacks (also right when run from a .pyc).
_THIS_FILE = (lambda: None).__code__.co_filename

# awslambdaric writes an error report as a single record: lines joined by CR and
# leading spaces turned into NO-BREAK SPACEs, so log pipelines that split on LF
# keep the whole traceback in one log event.
_ERROR_LINE_SEPARATOR = "\r"
_ERROR_INDENT = "\u00a0"

# Informational header; keep it well under HTTP servers' header size limits.
_MAX_XRAY_CAUSE_BYTES = 64 * 1024

_LOG_FORMAT_JSON = (os.environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON"

# The invocation being processed; the log handler stamps it on every record.
_current_request_id = None
_current_tenant_id = None


class FaultException(Exception):
    """A failure detected by the runtime itself, reported with a ``Runtime.*`` type."""

    MARSHAL_ERROR = "Runtime.MarshalError"
    UNMARSHAL_ERROR = "Runtime.UnmarshalError"
    USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
    HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
    IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
    BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
    MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
    LAMBDA_CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"

    def __init__(self, error_type, msg, trace=None):
        super().__init__(msg)
        self.error_type = error_type
        self.msg = msg
        self.trace = trace


# --------------------------------------------------------------------------
# Runtime API client
# --------------------------------------------------------------------------


class RuntimeAPIError(Exception):
    """The Runtime API could not be reached or answered with an unexpected status."""


class RuntimeAPIClient:
    """Minimal HTTP/1.1 client for the Runtime API over one keep-alive connection.

    Supports exactly what the Runtime API needs: Content-Length request bodies and
    Content-Length, chunked or read-until-close response bodies. No timeouts: the
    ``next`` long-poll may legitimately block for hours.
    """

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise RuntimeAPIError(
                "AWS_LAMBDA_RUNTIME_API must be host:port, got {!r}".format(address)
            )
        self._address = address
        self._host = host[1:-1] if host.startswith("[") else host
        self._port = int(port)
        self._sock = None
        self._buf = bytearray()
        self._response_started = False
        self._user_agent = "aws-lambda-python/{}.{}.{}-rampart".format(
            *sys.version_info[:3]
        )

    # -- Runtime API calls -------------------------------------------------

    def next_invocation(self):
        """Long-poll for the next event; returns (headers, body)."""
        endpoint = "/invocation/next"
        status, headers, body = self._request("GET", endpoint)
        if status != 200:
            raise RuntimeAPIError(_failure_text(endpoint, status, body))
        return headers, body

    def post_response(self, request_id, body, content_type):
        endpoint = "/invocation/{}/response".format(request_id)
        self._post(endpoint, body, {"Content-Type": content_type})

    def post_error(self, request_id, error_body, xray_cause):
        endpoint = "/invocation/{}/error".format(request_id)
        headers = {"Content-Type": "application/json"}
        if xray_cause and len(xray_cause) < _MAX_XRAY_CAUSE_BYTES:
            headers["Lambda-Runtime-Function-XRay-Error-Cause"] = xray_cause
        self._post(endpoint, error_body, headers)

    def post_init_error(self, error_body, error_type):
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Function-Error-Type": error_type,
        }
        self._post("/init/error", error_body, headers, expected=202)

    def _post(self, endpoint, body, headers, expected=None):
        status, _, response_body = self._request("POST", endpoint, body, headers)
        ok = status == expected if expected else 200 <= status < 300
        if not ok:
            raise RuntimeAPIError(_failure_text(endpoint, status, response_body))

    # -- HTTP/1.1 ------------------------------------------------------------

    def _request(self, method, endpoint, body=b"", headers=None):
        lines = [
            "{} {}{} HTTP/1.1".format(method, _API_PREFIX, endpoint),
            "Host: " + self._address,
            "User-Agent: " + self._user_agent,
        ]
        if method != "GET":
            lines.append("Content-Length: {}".format(len(body)))
        for name, value in (headers or {}).items():
            lines.append("{}: {}".format(name, value))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body

        for attempt in (1, 2):
            reused = self._sock is not None
            try:
                if not reused:
                    self._connect()
                self._response_started = False
                self._sock.sendall(data)
                return self._read_response()
            except (OSError, ValueError) as e:  # ValueError: malformed HTTP response
                self.close()
                # A kept-alive connection may have been closed by the server while
                # idle: retry once on a fresh one, but only if nothing was answered.
                if reused and attempt == 1 and not self._response_started:
                    continue
                raise RuntimeAPIError(
                    "Request to Lambda Runtime '{}' endpoint failed: {}".format(
                        _API_PREFIX + endpoint, e
                    )
                ) from None

    def _connect(self):
        error = OSError("no address found for " + self._address)
        try:
            host = self._host.encode("ascii")  # bytes keep the idna codec from loading
        except UnicodeEncodeError:
            host = self._host
        infos = _socket.getaddrinfo(host, self._port, 0, _socket.SOCK_STREAM)
        for family, socktype, proto, _, sockaddr in infos:
            sock = _socket.socket(family, socktype, proto)
            try:
                # Requests are written in one piece; don't let Nagle delay them.
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
                sock.connect(sockaddr)
            except OSError as e:
                sock.close()
                error = e
                continue
            self._sock = sock
            self._buf = bytearray()
            return
        raise error

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = bytearray()

    def _read_response(self):
        while True:
            version, _, rest = self._readline().partition(b" ")
            status = int(rest[:3])
            headers = {}
            while True:
                line = self._readline()
                if not line:
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower().decode("latin-1")
                value = value.strip().decode("utf-8", "replace")
                headers[name] = headers[name] + ", " + value if name in headers else value
            if status >= 200:
                break  # skip interim 1xx responses

        body = self._read_body(status, headers)
        connection = headers.get("connection", "").lower()
        if connection == "close" or (version == b"HTTP/1.0" and connection != "keep-alive"):
            self.close()
        return status, headers, body

    def _read_body(self, status, headers):
        if status in (204, 304):
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int(self._readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self._readline():  # trailers, up to the blank line
                        pass
                    return b"".join(chunks)
                chunks.append(self._read_exact(size))
                self._readline()  # CRLF after each chunk
        if "content-length" in headers:
            return self._read_exact(int(headers["content-length"]))
        # No framing: the body runs until the server closes the connection.
        while True:
            try:
                self._fill(65536)
            except ConnectionError:
                body = bytes(self._buf)
                self.close()
                return body

    def _fill(self, size):
        data = self._sock.recv(size)
        if not data:
            raise ConnectionError("connection closed by the Runtime API")
        self._response_started = True
        self._buf += data

    def _readline(self):
        """Return the next line without its line ending."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            self._fill(65536)

    def _read_exact(self, n):
        while len(self._buf) < n:
            self._fill(max(65536, min(n - len(self._buf), 1 << 20)))
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data


def _failure_text(endpoint, status, body):
    """awslambdaric's wording for a rejected Runtime API call."""
    return (
        "Request to Lambda Runtime '{}' endpoint failed. Reason: '{}'. Response body: '{}'"
    ).format(_API_PREFIX + endpoint, status, body.decode("utf-8", "replace"))


# --------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------


def _log_level_from_env():
    """AWS_LAMBDA_LOG_LEVEL as a logging level name ('' when unset); TRACE maps to DEBUG."""
    level = (os.environ.get("AWS_LAMBDA_LOG_LEVEL") or "").upper()
    return "DEBUG" if level == "TRACE" else level


def _setup_logging(logging):
    """Install AWS's root log handler on the freshly imported ``logging`` module.

    Records go to stdout as ``[LEVEL]\\t<UTC time>Z\\t<request id>\\t<message>``
    (or as JSON lines with AWS_LAMBDA_LOG_FORMAT=JSON). The root level stays at
    Python's default (WARNING) unless AWS_LAMBDA_LOG_LEVEL says otherwise.
    """
    logging.Formatter.converter = time.gmtime

    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record):
            try:
                msg = self.format(record)
                # Records with exc_info don't end in a newline; the platform reads
                # stdout line by line, so terminate every record.
                if not msg.endswith("\n"):
                    msg += "\n"
                sys.stdout.write(msg)
            except Exception:
                self.handleError(record)

    class LambdaLoggerFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _current_request_id or ""
            record.tenant_id = _current_tenant_id
            return True

    handler = LambdaLoggerHandler()
    if _LOG_FORMAT_JSON:
        handler.setFormatter(_make_json_formatter(logging))
    else:
        handler.setFormatter(
            logging.Formatter(
                "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
                "%Y-%m-%dT%H:%M:%S",
            )
        )
    handler.addFilter(LambdaLoggerFilter())

    root = logging.getLogger()
    level = _log_level_from_env()
    if level in logging._nameToLevel:
        root.setLevel(level)
    root.addHandler(handler)


def _make_json_formatter(logging):
    """awslambdaric's JSON formatter (used with AWS_LAMBDA_LOG_FORMAT=JSON)."""
    reserved = {
        "name", "msg", "args", "levelname", "levelno", "pathname", "filename",
        "module", "exc_info", "exc_text", "stack_info", "lineno", "funcName",
        "created", "msecs", "relativeCreated", "thread", "threadName",
        "processName", "process", "aws_request_id", "tenant_id", "_frame_type",
    }  # fmt: skip

    class JsonFormatter(logging.Formatter):
        def formatTime(self, record, datefmt=None):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            return "%s.%03dZ" % (stamp, record.msecs)

        def format(self, record):
            record.levelno = min(50, max(0, record.levelno)) // 10 * 10
            record.levelname = logging.getLevelName(record.levelno)
            exc = record.exc_info if record.exc_info and record.exc_info[0] else None
            stack_trace = None
            if exc:
                import traceback

                stack_trace = traceback.format_tb(exc[2])
            result = {
                "timestamp": self.formatTime(record),
                "level": record.levelname,
                "message": record.getMessage(),
                "logger": record.name,
                "stackTrace": stack_trace,
                "errorType": exc[0].__name__ if exc else None,
                "errorMessage": str(exc[1]) if exc else None,
                "requestId": getattr(record, "aws_request_id", None),
                "location": "{}:{}:{}".format(record.pathname, record.funcName, record.lineno)
                if exc
                else None,
            }
            if getattr(record, "tenant_id", None) is not None:
                result["tenantId"] = record.tenant_id
            result.update(
                (key, value)
                for key, value in record.__dict__.items()
                if key not in reserved and key not in result
            )
            result = {k: v for k, v in result.items() if v is not None}
            return _json_dumps(result, ensure_ascii=False, default=str) + "\n"

    return JsonFormatter()


class _ConfigureAfterExec:
    """Loader wrapper that runs _setup_logging once the logging module has executed."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # Hand the real loader back so introspection (inspect, pkgutil) sees it.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _setup_logging(module)


class _LoggingImportHook:
    """Meta-path finder that configures logging when it is first imported.

    Importing logging costs several milliseconds, so handlers that never log
    shouldn't pay for it at cold start; code that does import it still finds the
    Lambda handler on the root logger before it can use it, as under awslambdaric.
    """

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "logging":
            return None
        sys.meta_path.remove(cls)
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(name, path, target) if find_spec else None
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _ConfigureAfterExec(spec.loader)
                return spec
        return None


def _install_logging():
    if "logging" in sys.modules:
        _setup_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, _LoggingImportHook)


def _flush_output():
    """Push buffered stdout/stderr out before the invocation is reported finished."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


# --------------------------------------------------------------------------
# Error reports
# --------------------------------------------------------------------------


def make_error(error_message, error_type, stack_trace, request_id=None):
    """The JSON error document awslambdaric posts and returns to the caller."""
    return {
        "errorMessage": error_message or "",
        "errorType": error_type or "",
        "requestId": request_id if request_id is not None else "",
        "stackTrace": stack_trace or [],
    }


def _user_frames(tb):
    """Traceback entries as (file, line, function, text), minus this runtime's own
    leading frames (the same 4-tuples awslambdaric formats, so no caret lines)."""
    import traceback

    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    for i, frame in enumerate(frames):
        if frame[0] != _THIS_FILE:
            return frames[i:]
    return frames


def _fault_from_exception(exc, request_id=None):
    """Error document and X-Ray cause for an exception raised by user code."""
    import traceback

    frames = _user_frames(exc.__traceback__)
    error = make_error(str(exc), type(exc).__name__, traceback.format_list(frames), request_id)
    return error, _make_xray_cause(type(exc).__name__, str(exc), frames)


def _make_xray_cause(error_type, message, frames):
    stack = [{"label": name, "path": path, "line": line} for path, line, name, _ in frames]
    cause = {
        "working_directory": os.getcwd(),
        "exceptions": [{"message": message, "type": error_type, "stack": stack}],
        "paths": list({frame[0] for frame in frames}),
    }
    return _json_dumps(cause)  # ASCII-only, so it is safe as a header value


def log_error(error):
    """Write an error report to stdout the way AWS's Python runtime does."""
    if _LOG_FORMAT_JSON:
        record = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "level": "ERROR",
        }
        record.update(error)
        sys.stdout.write(_to_json(record) + "\n")
        return

    description = "[ERROR]"
    if error.get("errorType"):
        description += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            description += ":"
        description += " " + error["errorMessage"]

    lines = [description]
    stack_trace = error.get("stackTrace")
    if stack_trace is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack_trace:
            if element == "":
                lines.append("")
            for line in element.splitlines():
                stripped = line.lstrip(" ")
                lines.append(_ERROR_INDENT * (len(line) - len(stripped)) + stripped)
    sys.stdout.write(_ERROR_LINE_SEPARATOR.join(lines) + "\n")


# --------------------------------------------------------------------------
# Handler loading
# --------------------------------------------------------------------------


def _load_handler(handler):
    """Import ``module.function`` (module may use '/' or '.') from the task root."""
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultException(
            FaultException.MALFORMED_HANDLER_NAME,
            "Bad handler '{}': {}".format(handler, e),
        )

    if modname.split(".")[0] in sys.builtin_module_names:
        raise FaultException(
            FaultException.BUILT_IN_MODULE_CONFLICT,
            "Cannot use built-in module {} as a handler module".format(modname),
        )
    try:
        # Same as importlib.import_module without importing importlib (and warnings).
        module_path = modname.replace("/", ".")
        __import__(module_path)
        module = sys.modules[module_path]
    except ImportError as e:
        raise FaultException(
            FaultException.IMPORT_MODULE_ERROR,
            "Unable to import module '{}': {}".format(modname, e),
        )
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultException(
            FaultException.USER_CODE_SYNTAX_ERROR,
            "Syntax error in module '{}': {}".format(modname, e),
            trace,
        )

    try:
        return getattr(module, fname)
    except AttributeError:
        raise FaultException(
            FaultException.HANDLER_NOT_FOUND,
            "Handler '{}' missing on module '{}'".format(fname, modname),
        )


def _set_task_root_path():
    """Put the function code first on sys.path.

    Python put this script's directory there; it holds nothing for user code, so
    the task root takes its place.
    """
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    script_dir = os.path.dirname(os.path.realpath(sys.argv[0])) if sys.argv[0] else None
    if sys.path and script_dir and os.path.realpath(sys.path[0] or ".") == script_dir:
        sys.path[0] = task_root
    else:
        sys.path.insert(0, task_root)


# --------------------------------------------------------------------------
# Context object
# --------------------------------------------------------------------------


class LambdaContext:
    """The handler's ``context`` argument, attribute for attribute as on AWS."""

    def __init__(
        self,
        request_id,
        client_context,
        cognito_identity,
        deadline_ms,
        invoked_function_arn=None,
        tenant_id=None,
    ):
        env = os.environ
        self.aws_request_id = request_id
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        # A string, exactly as awslambdaric passes it through from the environment.
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        self._w3c_fields = _pop_w3c(client_context)

        self.client_context = _obj_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)

        # awslambdaric always provides an identity object; its fields are None
        # when the invocation carries no Cognito identity.
        self.identity = _obj_from_dict(CognitoIdentity, {})
        if cognito_identity is not None:
            self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = cognito_identity.get(
                "cognitoIdentityPoolId"
            )

        self._epoch_deadline_time_in_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        remaining = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def w3c(self):
        """W3C trace-context fields (traceparent, tracestate, baggage) from the client context."""
        return dict(self._w3c_fields)

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        fields = (
            "aws_request_id", "log_group_name", "log_stream_name", "function_name",
            "memory_limit_in_mb", "function_version", "invoked_function_arn",
            "client_context", "identity", "tenant_id",
        )  # fmt: skip
        return _repr_fields(self, fields)


class _SlotsRepr:
    __slots__ = ()

    def __repr__(self):
        return _repr_fields(self, self.__slots__)


class CognitoIdentity(_SlotsRepr):
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")


class Client(_SlotsRepr):
    __slots__ = (
        "installation_id",
        "app_title",
        "app_version_name",
        "app_version_code",
        "app_package_name",
    )


class ClientContext(_SlotsRepr):
    __slots__ = ("custom", "env", "client")


def _repr_fields(obj, fields):
    return "{}([{}])".format(
        type(obj).__name__,
        ",".join("{}={}".format(f, getattr(obj, f)) for f in fields),
    )


def _obj_from_dict(cls, values):
    if values is None:
        return None
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, values.get(field))
    return obj


def _pop_w3c(client_context):
    """Remove ``w3c`` from the client context, keeping its allowed string fields."""
    if not isinstance(client_context, dict):
        return {}
    raw = client_context.pop("w3c", None)
    if not isinstance(raw, dict):
        return {}
    return {
        key: raw[key]
        for key in ("traceparent", "tracestate", "baggage")
        if isinstance(raw.get(key), str)
    }


def _parse_json_header(value, name):
    try:
        return _json_loads(value)
    except Exception as e:
        raise FaultException(
            FaultException.LAMBDA_CONTEXT_UNMARSHAL_ERROR,
            "Unable to parse {} JSON: {}".format(name, e),
        )


# --------------------------------------------------------------------------
# Event / result (un)marshalling
# --------------------------------------------------------------------------


# json.loads / json.dumps equivalents on top of the C accelerator ``_json``. The
# json package itself imports ``re`` and with it enum, functools and collections:
# ~5 ms on a cold interpreter, half of Rampart's cold-start budget. These use the
# very scanner and encoder json uses, configured as json.loads() and json.dumps()
# configure them, so results are identical; any failure is handed to the json
# package, which then also produces the error messages users know.


class _DecoderSettings:
    """The attributes _json.make_scanner reads from a default json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {
        "-Infinity": float("-inf"),
        "Infinity": float("inf"),
        "NaN": float("nan"),
    }.__getitem__


_JSON_WHITESPACE = " \t\n\r"
_scan_json = _json.make_scanner(_DecoderSettings()) if _json else None


def _json_loads(data):
    if _scan_json is not None:
        try:
            text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
            start = len(text) - len(text.lstrip(_JSON_WHITESPACE))
            value, end = _scan_json(text, start)
            if not text[end:].strip(_JSON_WHITESPACE):
                return value
        except Exception:
            pass
    import json

    return json.loads(data)


def _json_dumps(obj, ensure_ascii=True, default=None):
    default = default or _json_default
    if _json is None:
        import json

        return json.dumps(obj, ensure_ascii=ensure_ascii, default=default)
    encode_str = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    # A fresh encoder per call: its circular-reference markers can go stale when
    # encoding fails half-way.
    encode = _json.make_encoder({}, default, encode_str, None, ": ", ", ", False, False, True)
    return "".join(encode(obj, 0))


def _json_default(obj):
    """Encode Decimal (as boto3's DynamoDB types produce) as a JSON number.

    awslambdaric emits the Decimal's exact text; the standard library can't, so
    integral values become ints (exact) and the rest floats.
    """
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(obj, decimal.Decimal):
        if obj.is_finite() and obj == obj.to_integral_value():
            return int(obj)
        return float(obj)
    raise TypeError("Object of type {} is not JSON serializable".format(type(obj).__name__))


def _response_ensure_ascii():
    """Python 3.12+ runtimes return non-ASCII characters unescaped; older ones escape them."""
    prefix = "AWS_Lambda_python3."
    env = os.environ.get("AWS_EXECUTION_ENV") or ""
    minor = sys.version_info[1]
    if env.startswith(prefix) and env[len(prefix):].isdigit():
        minor = int(env[len(prefix):])
    return minor < 12


_RESPONSE_ENSURE_ASCII = _response_ensure_ascii()


def _to_json(obj):
    """Serialize a response or error document the way awslambdaric does."""
    return _json_dumps(obj, ensure_ascii=_RESPONSE_ENSURE_ASCII)


def _unmarshal_event(body, content_type):
    """JSON events are decoded; any other content type reaches the handler as bytes."""
    if content_type.split(";", 1)[0].strip().lower() not in ("", "application/json"):
        return body
    try:
        return _json_loads(body)
    except Exception as e:
        raise FaultException(
            FaultException.UNMARSHAL_ERROR,
            "Unable to unmarshal input: {}".format(e),
        )


def _marshal_result(result):
    """Return (body bytes, content type); bytes results are passed through untouched."""
    if isinstance(result, bytes):
        return result, "application/unknown"
    try:
        return _to_json(result).encode("utf-8"), "application/json"
    except Exception as e:
        raise FaultException(
            FaultException.MARSHAL_ERROR,
            "Unable to marshal response: {}".format(e),
        )


# --------------------------------------------------------------------------
# Main loop
# --------------------------------------------------------------------------


def _handle_invocation(client, handler, headers, body):
    global _current_request_id, _current_tenant_id

    request_id = headers.get("lambda-runtime-aws-request-id")
    if not request_id:
        raise RuntimeAPIError("invocation/next response has no Lambda-Runtime-Aws-Request-Id")
    tenant_id = headers.get("lambda-runtime-aws-tenant-id")
    _current_request_id = request_id
    _current_tenant_id = tenant_id

    trace_id = headers.get("lambda-runtime-trace-id")
    if trace_id is not None:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)

    try:
        deadline_ms = int(headers.get("lambda-runtime-deadline-ms", ""))
    except ValueError:
        deadline_ms = 0

    try:
        client_context = headers.get("lambda-runtime-client-context")
        cognito_identity = headers.get("lambda-runtime-cognito-identity")
        context = LambdaContext(
            request_id,
            _parse_json_header(client_context, "Client Context") if client_context else None,
            _parse_json_header(cognito_identity, "Cognito Identity") if cognito_identity else None,
            deadline_ms,
            headers.get("lambda-runtime-invoked-function-arn"),
            tenant_id,
        )
        event = _unmarshal_event(body, headers.get("content-type", ""))
        result = handler(event, context)
        payload, content_type = _marshal_result(result)
    except FaultException as e:
        error = make_error(e.msg, e.error_type, e.trace, request_id)
        xray_cause = _make_xray_cause("LambdaValidationError", e.msg, [])
    except Exception as e:
        error, xray_cause = _fault_from_exception(e, request_id)
    else:
        _flush_output()
        client.post_response(request_id, payload, content_type)
        return

    log_error(error)
    _flush_output()
    client.post_error(request_id, _to_json(error).encode("utf-8"), xray_cause)


def _fatal(message):
    _flush_output()
    sys.stderr.write("[ERROR] Rampart Python runtime: {}\n".format(message))
    sys.exit(1)


def main():
    # The platform reads stdout/stderr through pipes and attributes each line to
    # the current invocation, so lines must not sit in a buffer.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)

    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        _fatal("AWS_LAMBDA_RUNTIME_API is not set")
    handler_name = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("_HANDLER", "")

    try:
        client = RuntimeAPIClient(address)
        _set_task_root_path()
        _install_logging()

        try:
            handler = _load_handler(handler_name)
        except Exception as e:
            if isinstance(e, FaultException):
                error = make_error(e.msg, e.error_type, e.trace)
            else:  # the module raised while being imported
                error, _ = _fault_from_exception(e)
            log_error(error)
            _flush_output()
            client.post_init_error(_to_json(error).encode("utf-8"), error["errorType"])
            sys.exit(1)

        while True:
            headers, body = client.next_invocation()
            _handle_invocation(client, handler, headers, body)
    except RuntimeAPIError as e:
        _fatal(str(e))


if __name__ == "__main__":
    main()
