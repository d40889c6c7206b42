// The annotation service's JSON API, as the browser pages call it.
// Paths are relative to the page's <base href> (the app's root: "/" standalone, "/dataengine/" in Airflow).
// Standalone, the annotator's token is kept in sessionStorage and sent as a bearer token; inside Airflow no
// token is stored and the browser's Airflow login cookie authenticates the same requests.

const TOKEN_KEY = "dataengine.token";

/** A refused or failed request: `status` is the HTTP status (0 when the service did not answer). */
export class ServiceError extends Error {
  constructor(status, detail, path) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.path = path;
  }
}

export function storedToken() { return sessionStorage.getItem(TOKEN_KEY); }
export function storeToken(token) { sessionStorage.setItem(TOKEN_KEY, token.trim()); }
export function forgetToken() { sessionStorage.removeItem(TOKEN_KEY); }

function readableDetail(detail) {
  if (Array.isArray(detail)) {   // FastAPI's validation errors: [{loc, msg}, ...]
    return detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`).join("; ");
  }
  return typeof detail === "string" ? detail : JSON.stringify(detail);
}

/** Send a request; return the Response when it is 2xx, else throw a ServiceError with the service's words. */
export async function request(method, path, body) {
  const headers = {};
  const token = storedToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, credentials: "same-origin",
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ServiceError(0, `the annotation service did not answer (${error.message})`, path);
  }
  if (!response.ok) {
    let detail = response.statusText || `HTTP ${response.status}`;
    try { detail = readableDetail((await response.json()).detail ?? detail); } catch { /* not JSON */ }
    throw new ServiceError(response.status, detail, path);
  }
  return response;
}

async function json(method, path, body) { return (await request(method, path, body)).json(); }
const enc = encodeURIComponent;

export const api = {
  me: () => json("GET", "api/me"),
  batches: () => json("GET", "api/batches"),
  progress: (batch) => json("GET", `api/batches/${enc(batch)}/progress`),
  claim: (batch) => json("POST", `api/batches/${enc(batch)}/claim`, {}),
  task: (taskId) => json("GET", `api/tasks/${enc(taskId)}`),
  image: async (taskId) => (await request("GET", `api/tasks/${enc(taskId)}/image`)).blob(),
  renew: (taskId) => json("POST", `api/tasks/${enc(taskId)}/lease`, {}),
  release: (taskId) => json("POST", `api/tasks/${enc(taskId)}/release`),
  predict: (taskId, prompt) => json("POST", `api/tasks/${enc(taskId)}/predict`, prompt),
  draft: (taskId, body) => json("PUT", `api/tasks/${enc(taskId)}/draft`, body),
  submit: (taskId, body) => json("POST", `api/tasks/${enc(taskId)}/submit`, body),
  skip: (taskId, code, reason) => json("POST", `api/tasks/${enc(taskId)}/skip`, { code, reason }),
  monitoring: () => json("GET", "api/monitoring"),
  report: (key) => request("GET", `api/monitoring/reports/${key.split("/").map(enc).join("/")}`),
  loopCurves: async () => (await request("GET", "api/monitoring/loop-curves.png")).blob(),
};

/** Return a random id for a submission (works outside secure contexts, unlike crypto.randomUUID). */
export function newSubmissionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
