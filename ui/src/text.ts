// Message text to DOM nodes: plain text, links (http and https only) and @mentions.
// Everything is a Text node or an element whose content is a Text node.

import { h } from './dom';

const TOKEN = /\bhttps?:\/\/[^\s<>"]+|@[\p{L}\p{N}_.-]+/giu;
const TRAILING = /[.,;:!?'"]+$/;

/** Folds a name for comparison (the server folds with NFKC and full case folding). */
export function fold(name: string): string {
  return name.normalize('NFKC').toLowerCase();
}

/** A link's target when `raw` is a valid http(s) URL, else null. */
export function safeUrl(raw: string): string | null {
  try {
    const url = new URL(raw);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

/** Splits a URL match from punctuation that ends the sentence around it. */
function trimUrl(raw: string): [string, string] {
  let url = raw.replace(TRAILING, '');
  // A closing parenthesis belongs to the URL only when it opens one too.
  while (url.endsWith(')') && (url.match(/\(/g) ?? []).length < (url.match(/\)/g) ?? []).length) {
    url = url.slice(0, -1);
  }
  return [url, raw.slice(url.length)];
}

/** Whether `text` mentions `me` as `@me` (first word of the name for names with spaces). */
export function mentions(text: string, me: string): boolean {
  const wanted = fold(me.split(' ')[0] ?? me);
  for (const match of text.matchAll(TOKEN)) {
    if (match[0].startsWith('@') && fold(match[0].slice(1)) === wanted) return true;
  }
  return false;
}

/** The nodes showing `text`: links are anchors, mentions are highlighted spans. */
export function richText(text: string, me: string): Node[] {
  const nodes: Node[] = [];
  const wanted = fold(me.split(' ')[0] ?? me);
  let at = 0;
  for (const match of text.matchAll(TOKEN)) {
    const start = match.index ?? 0;
    if (start > at) nodes.push(document.createTextNode(text.slice(at, start)));
    const token = match[0];
    if (token.startsWith('@')) {
      const self = fold(token.slice(1)) === wanted;
      nodes.push(h('span', { class: self ? 'mention self' : 'mention' }, token));
      at = start + token.length;
      continue;
    }
    const [url, rest] = trimUrl(token);
    const href = safeUrl(url);
    nodes.push(
      href
        ? h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, url)
        : document.createTextNode(url),
    );
    at = start + url.length;
    if (rest) {
      nodes.push(document.createTextNode(rest));
      at += rest.length;
    }
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}
