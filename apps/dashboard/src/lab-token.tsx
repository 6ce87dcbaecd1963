/**
 * The lab's token, as the observer put it in the page it served (`<meta name="mmlab-token">`,
 * apps/observer/src/dashboard.controller.ts): the observer refuses a mutating request without
 * it (and without Content-Type: application/json), so a page of another site cannot change
 * the lab. A page not served by a lab's observer (vite dev) has none.
 */
const META = 'meta[name="mmlab-token"]';

export function labToken(): string | null {
  return document.querySelector<HTMLMetaElement>(META)?.content || null;
}

/**
 * POST a JSON body with the lab's token; resolves to the parsed answer, rejects with the
 * observer's `{code, message}` as an Error.
 */
export async function postWithToken<T>(url: string, body: unknown = {}): Promise<T> {
  const token = labToken();
  const r = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(body),
  });
  const answer = (await r.json().catch(() => ({}))) as T & { code?: string; message?: string };
  if (!r.ok) throw new Error(`${answer.code ?? r.status}: ${answer.message ?? r.statusText}`);
  return answer;
}
