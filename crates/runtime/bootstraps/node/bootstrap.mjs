// Rampart's built-in Node.js runtime (the nodejs20.x / nodejs22.x equivalent).
//
// Started as `node bootstrap.mjs [handler]` with cwd = LAMBDA_TASK_ROOT. It loads
// the handler named by argv[2] or _HANDLER, then loops on the Lambda Runtime API
// (GET next -> run handler -> POST response | error). Behaviour mirrors AWS's
// aws-lambda-nodejs-runtime-interface-client (the "RIC") so unmodified handlers
// run: module lookup, error types and texts, the context object, callback and
// promise semantics, callbackWaitsForEmptyEventLoop, console log lines and
// response streaming.
//
// Only Node built-ins are used, and only those the first invoke needs: all of
// this is on the cold-start path.

import { existsSync, readFileSync, writeSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import { format, types } from 'node:util';

const require = createRequire(import.meta.url);
const env = process.env;

// ---------------------------------------------------------------------------
// Errors

// Runtime.* error names live on the prototype so V8 prints them in the stack
// header ("Runtime.ImportModuleError: ..."), exactly as the RIC's do.
class ImportModuleError extends Error {}
class HandlerNotFound extends Error {}
class MalformedHandlerName extends Error {}
class UserCodeSyntaxError extends Error {
  constructor(original) {
    super(String(original));
    // Keep the original stack: it names the offending file and line.
    if (typeof original.stack === 'string') this.stack = original.stack;
  }
}
class UnmarshalError extends Error {}
class JSONStringifyError extends Error {}
class MalformedStreamingHandler extends Error {}
class InvalidStreamingOperation extends Error {}
class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(reason === undefined ? undefined : safeString(reason));
    this.reason = reason;
    this.promise = promise;
  }
}
class NodeJsExit extends Error {
  constructor() {
    super(
      'The Lambda runtime client detected an unexpected Node.js exit code. This is most ' +
        'commonly caused by a Promise that was never settled. For more information, see ' +
        'https://nodejs.org/docs/latest/api/process.html#exit-codes',
    );
  }
}
for (const cls of [
  ImportModuleError, HandlerNotFound, MalformedHandlerName, UserCodeSyntaxError,
  UnmarshalError, JSONStringifyError, MalformedStreamingHandler,
  InvalidStreamingOperation, UnhandledPromiseRejection, NodeJsExit,
]) {
  cls.prototype.name = `Runtime.${cls.name}`;
}

function safeString(value) {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

function looksLikeError(obj) {
  return Boolean(obj) && typeof obj.name === 'string' && typeof obj.message === 'string' &&
    typeof obj.stack === 'string' && obj.name !== '' && obj.message !== '' && obj.stack !== '';
}

// The /error and /init/error request, shaped as the Node RIC sends it: body
// {"errorType","errorMessage","trace"}. Non-errors (callback('oops')) are
// reported by typeof, as AWS does.
function errorRequest(error) {
  let payload;
  let body;
  try {
    const isError = types.isNativeError(error) || looksLikeError(error);
    payload = isError
      ? { errorType: error.name, errorMessage: error.message, trace: error.stack.split('\n') }
      : { errorType: typeof error, errorMessage: error.toString(), trace: [] };
    body = JSON.stringify(payload);
  } catch {
    payload = {
      errorType: 'handled',
      errorMessage: 'callback called with Error argument, but there was a problem while ' +
        'retrieving one or more of its message, name, and stack',
    };
    body = JSON.stringify(payload);
  }
  // The header is optional for the platform; a name Node cannot put in a
  // header (non-ASCII, control characters) must not crash the runtime.
  const type = String(payload.errorType);
  const headers = HEADER_SAFE.test(type) ? { [ERROR_TYPE_HEADER]: type } : {};
  return { body, headers, type };
}

function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

// Error name, message, code and stack are not enumerable; the log record
// (not the API body) shows them alongside any enumerable user properties.
function withEnumerableProperties(_key, value) {
  if (!(value instanceof Error)) return value;
  const out = { errorType: value.name, errorMessage: value.message, code: value.code, ...value };
  if (typeof value.stack === 'string') out.stack = value.stack.split('\n');
  return out;
}

// ---------------------------------------------------------------------------
// Logging: console.* lines as AWS writes them,
// `<ISO time>\t<requestId>\t<LEVEL>\t<util.format(...)>` (or a JSON record when
// AWS_LAMBDA_LOG_FORMAT=JSON). Lines are written with fs.writeSync so one
// printed right before a crash or a kill is not lost in an async pipe buffer.

const REQUEST_ID = Symbol.for('aws.lambda.runtime.requestId'); // shared with tooling, as AWS
const LEVELS = { TRACE: 1, DEBUG: 2, INFO: 3, WARN: 4, ERROR: 5, FATAL: 6 };
const MIN_LEVEL = LEVELS[env.AWS_LAMBDA_LOG_LEVEL?.toUpperCase()] ?? LEVELS.TRACE;
const JSON_LOGS = env.AWS_LAMBDA_LOG_FORMAT?.toUpperCase() === 'JSON';
const STDOUT = 1;
const STDERR = 2; // the runtime's own error reports (Invoke Error, Uncaught Exception, ...)

let sleepCell; // lazily created: only needed if a pipe ever fills up

function writeAll(fd, text) {
  const buf = Buffer.from(text);
  let offset = 0;
  while (offset < buf.length) {
    try {
      offset += writeSync(fd, buf, offset);
    } catch (err) {
      // The fd turns non-blocking once user code touches process.stdout; wait
      // for the reader to drain the pipe instead of dropping the line.
      if (err.code !== 'EAGAIN') return;
      sleepCell ??= new Int32Array(new SharedArrayBuffer(4));
      Atomics.wait(sleepCell, 0, 0, 1);
    }
  }
}

function jsonRecord(time, level, requestId, params) {
  const record = { timestamp: time, level, requestId };
  if (params.length === 1) {
    record.message = params[0];
    try {
      return JSON.stringify(record, jsonErrorReplacer);
    } catch {
      record.message = format(params[0]);
      return JSON.stringify(record);
    }
  }
  record.message = format(...params);
  const error = params.find((p) => p instanceof Error);
  if (error) {
    record.errorType = error.constructor?.name ?? 'UnknownError';
    record.errorMessage = error.message;
    record.stackTrace = typeof error.stack === 'string' ? error.stack.split('\n') : [];
  }
  return JSON.stringify(record);
}

function jsonErrorReplacer(_key, value) {
  if (!(value instanceof Error)) return value;
  return {
    errorType: value.constructor?.name ?? 'UnknownError',
    errorMessage: value.message,
    stackTrace: typeof value.stack === 'string' ? value.stack.split('\n') : value.stack,
    ...value,
  };
}

function log(fd, level, params) {
  const time = new Date().toISOString();
  const requestId = globalThis[REQUEST_ID];
  const line = JSON_LOGS
    ? jsonRecord(time, level, requestId, params)
    : `${time}\t${requestId}\t${level}\t${format(...params)}`;
  // One record per line, as AWS does: embedded newlines become carriage returns.
  writeAll(fd, line.replace(/\n/g, '\r') + '\n');
}

function patchConsole() {
  const logger = (level) => (LEVELS[level] >= MIN_LEVEL
    ? (message, ...params) => log(STDOUT, level, [message, ...params])
    : () => {});
  console.trace = logger('TRACE');
  console.debug = logger('DEBUG');
  console.info = logger('INFO');
  console.log = console.info;
  console.warn = logger('WARN');
  console.error = logger('ERROR');
  console.fatal = logger('FATAL');
}

// "Invoke Error \t{json}" in Text format, the error object itself in JSON format.
function logError(label, err) {
  if (LEVELS.ERROR < MIN_LEVEL) return;
  const error = intoError(err);
  if (JSON_LOGS) return log(STDERR, 'ERROR', [error]);
  let detail;
  try {
    detail = JSON.stringify(error, withEnumerableProperties);
  } catch {
    detail = errorRequest(error).body;
  }
  log(STDERR, 'ERROR', [label, `\t${detail}`]);
}

// ---------------------------------------------------------------------------
// Runtime API client: plain HTTP/1.1 on one keep-alive socket, as the RIC does.

const API_PREFIX = '/2018-06-01/runtime';
const ERROR_TYPE_HEADER = 'Lambda-Runtime-Function-Error-Type';
const ERROR_BODY_TRAILER = 'Lambda-Runtime-Function-Error-Body';
const HEADER_SAFE = /^[\x20-\x7e]*$/; // what Node accepts in a header value without throwing
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
let apiHost;
let apiPort;

function apiOptions(method, path, headers) {
  return { host: apiHost, port: apiPort, method, path: API_PREFIX + path, agent, headers };
}

// Resolves with { status, headers, body } once the whole response has arrived.
// No timeout: GET next legitimately blocks until an event exists.
function apiRequest(method, path, body, headers, retried = false) {
  return new Promise((resolve, reject) => {
    const req = http.request(apiOptions(method, path, headers), (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({
        status: res.statusCode,
        headers: res.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      }));
      res.on('error', reject);
    });
    req.on('error', (err) => {
      // The server may close an idle keep-alive socket just as we reuse it;
      // nothing reached it, so one retry on a fresh socket is safe.
      if (req.reusedSocket && err.code === 'ECONNRESET' && !retried) {
        resolve(apiRequest(method, path, body, headers, true));
      } else {
        reject(err);
      }
    });
    req.end(body);
  });
}

// The Runtime API is the runtime's lifeline: when it fails, say why and exit
// so the platform recycles the environment.
function runtimeApiFailure(what, detail) {
  log(STDERR, 'ERROR', [`Rampart Node.js runtime: ${what} failed: ${detail}`]);
  process.exit(1);
}

function postJson(path, body, headers) {
  return apiRequest('POST', path, body, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    ...headers,
  });
}

// POST an invocation's response or error. Resolves when the platform has it;
// any failure ends the process.
async function postInvocationResult(id, kind, body, headers) {
  const what = `POST /runtime/invocation/${id}/${kind}`;
  let res;
  try {
    res = await postJson(`/invocation/${encodeURIComponent(id)}/${kind}`, body, headers);
  } catch (err) {
    runtimeApiFailure(what, err.message);
  }
  if (res.status === 413) {
    // The platform has already failed this invoke (Function.ResponseSizeTooLarge)
    // and the runtime itself is healthy: say so and carry on.
    log(STDERR, 'ERROR', [`${what}: response too large (413): ${res.body}`]);
  } else if (res.status < 200 || res.status > 299) {
    runtimeApiFailure(what, `HTTP ${res.status} ${res.body}`);
  }
}

async function postInitError(error) {
  const { body, headers } = errorRequest(error);
  try {
    const res = await postJson('/init/error', body, headers);
    if (res.status !== 202) {
      log(STDERR, 'ERROR', [`POST /runtime/init/error: HTTP ${res.status} ${res.body}`]);
    }
  } catch (err) {
    log(STDERR, 'ERROR', [`POST /runtime/init/error failed: ${err.message}`]);
  }
}

// ---------------------------------------------------------------------------
// Handler loading, as the RIC's UserFunction.js: `dir/module.path.to.fn`.

const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const STREAM_RESPONSE = 'response';

function splitHandler(fullHandler) {
  if (fullHandler.includes('..')) {
    throw new MalformedHandlerName(`'${fullHandler}' is not a valid handler name. Use absolute ` +
      'paths when specifying root directories in handler names.');
  }
  const slash = fullHandler.lastIndexOf('/');
  const moduleRoot = fullHandler.slice(0, slash + 1);
  const match = /^([^.]*)\.(.*)$/.exec(fullHandler.slice(slash + 1));
  if (!match) throw new MalformedHandlerName('Bad handler');
  return [moduleRoot, match[1], match[2]];
}

// `.js` is ESM when the nearest package.json says "type": "module"; the walk
// stops at node_modules and at the filesystem root.
function inModulePackage(folder) {
  for (;;) {
    if (folder.endsWith('/node_modules')) return false;
    const pj = join(folder, 'package.json');
    if (existsSync(pj)) {
      try {
        return JSON.parse(readFileSync(pj, 'utf8'))?.type === 'module';
      } catch (e) {
        console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`,
          e);
        return false;
      }
    }
    const parent = dirname(folder);
    if (parent === folder) return false;
    folder = parent;
  }
}

async function requireFile(file) {
  try {
    return require(file);
  } catch (err) {
    // Node 20.19+ can require() ES modules, except those using top-level await.
    if (err.code === 'ERR_REQUIRE_ASYNC_MODULE' || err.code === 'ERR_REQUIRE_ESM') return importFile(file);
    throw err;
  }
}

function importFile(file) {
  return import(pathToFileURL(file).href);
}

// Lookup order as AWS: <module> (no extension), <module>.js (CommonJS unless
// in a "type": "module" package), <module>.mjs, <module>.cjs, then Node's own
// resolution (node_modules, NODE_PATH) relative to the task root.
async function loadModule(appRoot, moduleRoot, name) {
  const base = resolvePath(appRoot, moduleRoot, name);
  const esmPackage = inModulePackage(dirname(base));
  const candidates = [
    [base, requireFile],
    [`${base}.js`, esmPackage ? importFile : requireFile],
    [`${base}.mjs`, importFile],
    [`${base}.cjs`, requireFile],
  ];
  for (const [file, load] of candidates) {
    if (existsSync(file)) {
      const loaded = await load(file);
      if (loaded) return loaded;
    }
  }
  return requireFile(require.resolve(name, { paths: [appRoot, moduleRoot] }));
}

async function loadHandler(appRoot, fullHandler) {
  const [moduleRoot, moduleName, handlerPath] = splitHandler(fullHandler);
  let userModule;
  try {
    userModule = await loadModule(appRoot, moduleRoot, moduleName);
  } catch (err) {
    if (err instanceof SyntaxError) throw new UserCodeSyntaxError(err);
    if (err?.code === 'MODULE_NOT_FOUND') throw new ImportModuleError(err);
    throw err;
  }
  const fn = handlerPath.split('.').reduce((obj, key) => obj && obj[key], userModule);
  if (!fn) throw new HandlerNotFound(`${fullHandler} is undefined or not exported`);
  if (typeof fn !== 'function') throw new HandlerNotFound(`${fullHandler} is not a function`);
  const streaming = fn[HANDLER_STREAMING];
  if (streaming && streaming !== STREAM_RESPONSE) {
    throw new MalformedStreamingHandler('Only response streaming is supported.');
  }
  return fn;
}

// `awslambda` is a global in AWS's Node runtime; handlers use it to opt into
// response streaming, so it must exist before user code loads.
function defineAwsLambdaGlobal() {
  if (env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA === '1' ||
      env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA === 'true') return;
  globalThis.awslambda = {
    streamifyResponse(handler, options) {
      handler[HANDLER_STREAMING] = STREAM_RESPONSE;
      if (typeof options?.highWaterMark === 'number') {
        handler[Symbol.for('aws.lambda.runtime.handler.streaming.highWaterMark')] = options.highWaterMark;
      }
      return handler;
    },
    HttpResponseStream: class HttpResponseStream {
      // Function URL / API Gateway streaming: a JSON prelude, 8 NUL bytes, then the body.
      static from(stream, prelude) {
        stream.setContentType('application/vnd.awslambda.http-integration-response');
        const metadata = JSON.stringify(prelude);
        stream._onBeforeFirstWrite = (write) => {
          write(metadata);
          write(new Uint8Array(8));
        };
        return stream;
      }
    },
  };
}

// ---------------------------------------------------------------------------
// Invocations

let handler;
let handlerIsAsync = false;
let initializing = true; // until the first event arrives, failures are init errors
let current = null; // the invocation in progress, or the last one
let exiting = false; // a fatal error is being reported; start nothing new

// The RIC's beforeExit hook: runs when the event loop drains mid-invoke (no
// timers, sockets or I/O left). That is when a callback result waiting for an
// empty loop is sent, or when a handler that never answered is closed off.
const noop = () => {};
let onEventLoopEmpty = noop;
process.on('beforeExit', () => onEventLoopEmpty());

function whenEventLoopEmpty(fn) {
  onEventLoopEmpty = () => {
    onEventLoopEmpty = noop;
    fn();
  };
}

function scheduleNext() {
  setImmediate(() => {
    if (!exiting) nextInvocation(); // a fatal error may have struck meanwhile
  });
}

class Invocation {
  constructor(id) {
    this.id = id;
    this.reported = false;
    this.posted = Promise.resolve(); // the in-flight POST of the result, if any
    this.stream = null; // the response stream, for streaming handlers
  }

  // JSON-serialise the result as the RIC does (undefined -> null).
  succeed(result) {
    let body;
    try {
      body = JSON.stringify(result === undefined ? null : result) ?? 'null';
    } catch {
      return this.fail(new JSONStringifyError('Unable to stringify response body'));
    }
    this.report('response', body);
  }

  fail(err) {
    logError('Invoke Error', err);
    const { body, headers } = errorRequest(err);
    this.report('error', body, headers);
  }

  // Exactly one result per invocation; later ones are user bugs (e.g. a
  // callback called after the loop drained) and only get logged.
  report(kind, body, headers) {
    if (this.reported) {
      console.error('Invocation has already been reported as done. ' +
        'Cannot call complete more than once per invocation.');
      return;
    }
    this.reported = true;
    this.posted = postInvocationResult(this.id, kind, body, headers).then(scheduleNext);
  }
}

async function nextInvocation() {
  let res;
  try {
    res = await apiRequest('GET', '/invocation/next');
  } catch (err) {
    runtimeApiFailure('GET /runtime/invocation/next', err.message);
  }
  const id = res.headers['lambda-runtime-aws-request-id'];
  if (res.status !== 200 || !id) {
    runtimeApiFailure('GET /runtime/invocation/next', `HTTP ${res.status} ${res.body}`);
  }

  initializing = false;
  current = new Invocation(id);
  globalThis[REQUEST_ID] = id;
  const traceId = res.headers['lambda-runtime-trace-id'];
  if (traceId) env._X_AMZN_TRACE_ID = traceId;
  else delete env._X_AMZN_TRACE_ID;

  if (handler[HANDLER_STREAMING] === STREAM_RESPONSE) runStreaming(current, res.headers, res.body);
  else runBuffered(current, res.headers, res.body);
}

function parseEvent(body) {
  try {
    return JSON.parse(body);
  } catch (err) {
    throw new UnmarshalError(`Unable to unmarshal input: ${err.message}`);
  }
}

function parseJsonHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

// The context fields AWS fills from the environment and the invoke headers.
// Read per invoke, as the RIC does. Throws on malformed JSON headers, which
// then fails the invoke.
function contextData(headers) {
  const deadline = Number(headers['lambda-runtime-deadline-ms']);
  return {
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE, // a string, as AWS
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext'),
    identity: parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    tenantId: headers['lambda-runtime-aws-tenant-id'],
    getRemainingTimeInMillis: () => deadline - Date.now(),
  };
}

function isPromise(value) {
  return typeof value?.then === 'function';
}

// callback(err, result) and the legacy context.succeed/fail/done, as the RIC
// builds them: only the first call of any of them counts. callback() with a
// result honours callbackWaitsForEmptyEventLoop (answer once the event loop
// drains); succeed/fail/done and promise results answer at once.
function callbackContext(inv) {
  let waitForEmptyEventLoop = true;
  let called = false;
  const once = (fn) => (...args) => {
    if (called) return;
    called = true;
    fn(...args);
  };
  const done = (err, result) => {
    onEventLoopEmpty = noop;
    if (err !== undefined && err !== null) inv.fail(err);
    else inv.succeed(result);
  };
  const callback = (err, result) => {
    onEventLoopEmpty = noop;
    if (err !== undefined && err !== null) inv.fail(err);
    else if (!waitForEmptyEventLoop) inv.succeed(result);
    else whenEventLoopEmpty(() => inv.succeed(result));
  };
  const context = {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(value) {
      waitForEmptyEventLoop = value;
    },
    succeed: once((result) => done(null, result)),
    fail: once((err) => done(err ?? 'handled', null)),
    done: once(done),
  };
  return [once(callback), context];
}

function runBuffered(inv, headers, body) {
  const [callback, context] = callbackContext(inv);
  // If the loop drains with no answer: an async handler left a promise that
  // can never settle (an error, as AWS); a callback-style one forgot to call
  // back (null, as AWS).
  whenEventLoopEmpty(() => {
    if (handlerIsAsync) inv.fail(new NodeJsExit());
    else inv.succeed(null);
  });
  try {
    const event = parseEvent(body);
    const result = handler(event, Object.assign(context, contextData(headers)), callback);
    if (isPromise(result)) {
      result.then(context.succeed, context.fail);
    } else if (result !== undefined) {
      // A plain return value from a sync handler is the result (as the
      // nodejs24.x runtime); undefined means "wait for callback or succeed()".
      context.succeed(result);
    }
  } catch (err) {
    callback(err);
  }
}

// ---------------------------------------------------------------------------
// Response streaming (awslambda.streamifyResponse handlers)

// The response stream is the chunked POST itself. Errors after the handler
// started are sent as HTTP trailers, as the RIC does.
function openResponseStream(inv) {
  const path = `/invocation/${encodeURIComponent(inv.id)}/response`;
  const req = http.request(apiOptions('POST', path, {
    'Lambda-Runtime-Function-Response-Mode': 'streaming',
    'Transfer-Encoding': 'chunked',
    Trailer: `${ERROR_TYPE_HEADER}, ${ERROR_BODY_TRAILER}`,
    'Content-Type': 'application/octet-stream',
  }));
  req.response = new Promise((resolve) => {
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
  });
  req.on('error', (err) => runtimeApiFailure(`POST /runtime${path}`, err.message));

  const write = req.write.bind(req);
  const end = req.end.bind(req);
  let started = false;
  const start = () => {
    if (started) return;
    started = true;
    req._onBeforeFirstWrite?.((chunk) => write(chunk));
  };
  req.setContentType = (type) => {
    if (started) throw new InvalidStreamingOperation('Cannot set content-type, too late.');
    req.setHeader('Content-Type', type);
  };
  req.write = (chunk, encoding, cb) => {
    start();
    if (typeof chunk !== 'string' && !(chunk instanceof Uint8Array)) chunk = JSON.stringify(chunk);
    return write(chunk, encoding, cb);
  };
  req.end = (chunk, encoding, cb) => {
    if (typeof chunk === 'function') [cb, chunk] = [chunk, undefined];
    else if (typeof encoding === 'function') [cb, encoding] = [encoding, undefined];
    if (chunk !== undefined && chunk !== null) req.write(chunk, encoding);
    else start();
    return end(cb);
  };
  req.endWithError = (err) => {
    if (req.writableEnded) return; // too late for trailers; the body has been sent
    const { body, type } = errorRequest(err);
    req.addTrailers({
      [ERROR_TYPE_HEADER]: HEADER_SAFE.test(type) ? type : 'Runtime.Unknown',
      [ERROR_BODY_TRAILER]: Buffer.from(body).toString('base64'),
    });
    end();
  };
  return req;
}

async function runStreaming(inv, headers, body) {
  let waitForEmptyEventLoop = true;
  const context = {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(value) {
      waitForEmptyEventLoop = value;
    },
  };
  inv.reported = true; // the response POST is opened up front
  const stream = (inv.stream = openResponseStream(inv));
  inv.posted = stream.response;
  onEventLoopEmpty = noop;
  try {
    const event = parseEvent(body);
    const result = handler(event, stream, Object.assign(context, contextData(headers)));
    if (!isPromise(result)) {
      throw new MalformedStreamingHandler('Streaming does not support non-async handlers.');
    }
    if ((await result) !== undefined) console.warn('Streaming handlers ignore return values.');
    if (!stream.writableEnded) throw new InvalidStreamingOperation('Response stream is not finished.');
  } catch (err) {
    logError('Invoke Error', err);
    stream.endWithError(err);
  }
  const res = await stream.response;
  if (res.status < 200 || res.status > 299) {
    runtimeApiFailure(`POST /runtime/invocation/${inv.id}/response`, `HTTP ${res.status} ${res.body}`);
  }
  if (waitForEmptyEventLoop) whenEventLoopEmpty(scheduleNext);
  else scheduleNext();
}

// ---------------------------------------------------------------------------
// Fatal errors: report, then exit with the RIC's codes (129 for an uncaught
// exception or a failed init, 128 for an unhandled rejection).

async function fatal(label, err, exitCode) {
  logError(label, err);
  if (exiting) return; // already reporting an earlier failure
  exiting = true;
  try {
    if (initializing) {
      await postInitError(err);
    } else if (current?.stream && !current.stream.writableEnded) {
      current.stream.endWithError(err);
      await current.stream.response;
    } else if (current && !current.reported) {
      const { body, headers } = errorRequest(err);
      current.reported = true;
      await postInvocationResult(current.id, 'error', body, headers);
    } else {
      await current?.posted; // let an answer already on its way arrive
    }
  } finally {
    process.exit(exitCode);
  }
}

async function main() {
  const api = env.AWS_LAMBDA_RUNTIME_API;
  const colon = api ? api.lastIndexOf(':') : -1;
  if (colon < 1) {
    writeAll(STDERR, 'Rampart Node.js runtime: AWS_LAMBDA_RUNTIME_API must be set to host:port\n');
    process.exit(1);
  }
  apiHost = api.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  apiPort = Number(api.slice(colon + 1));

  patchConsole();
  defineAwsLambdaGlobal();
  process.on('uncaughtException', (err) => fatal('Uncaught Exception', err, 129));
  process.on('unhandledRejection', (reason, promise) =>
    fatal('Unhandled Promise Rejection', new UnhandledPromiseRejection(reason, promise), 128));

  try {
    handler = await loadHandler(env.LAMBDA_TASK_ROOT || process.cwd(), process.argv[2] ?? env._HANDLER ?? '');
  } catch (err) {
    return fatal('Uncaught Exception', err, 129);
  }
  handlerIsAsync = handler.constructor?.name === 'AsyncFunction';
  scheduleNext();
}

main();
