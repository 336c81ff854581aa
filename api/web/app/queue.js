// The offline rating queue. Every rating goes through it, online or not: it is written to
// localStorage before any request, so closing the tab or losing the network loses nothing, and
// each request carries an Idempotency-Key chosen before the first try and kept for every retry,
// so a request whose answer was lost is replayed by the server instead of counted twice.
// Only the answer that may leave the phone is stored here (already randomized when on-device
// randomization is on), never the true one.

import { ApiError, NetworkError, newKey } from "../shared/api.js";

const BATCH_LIMIT = 100;

export class RatingQueue {
  constructor({ api, storageKey, onChange = () => {} }) {
    this.api = api;
    this.storageKey = storageKey;
    this.onChange = onChange;
    this.flushing = null;
  }

  load() {
    const raw = localStorage.getItem(this.storageKey);
    return raw ? JSON.parse(raw) : { pending: [], inflight: null };
  }

  save(state) {
    localStorage.setItem(this.storageKey, JSON.stringify(state));
    this.onChange(this.size(state));
  }

  size(state = this.load()) {
    return state.pending.length + (state.inflight ? state.inflight.items.length : 0);
  }

  /** Queue one rating body ({face_id, liked} or {face_id, randomized_like, epsilon}). */
  add(body) {
    const state = this.load();
    state.pending.push(body);
    this.save(state);
  }

  /** Send everything queued; resolves to the per-rating outcomes of this flush. One at a time. */
  flush() {
    this.flushing ??= this.drain().finally(() => {
      this.flushing = null;
    });
    return this.flushing;
  }

  async drain() {
    const outcomes = [];
    try {
      while (navigator.onLine && this.size() > 0) {
        outcomes.push(...(await this.sendBatch()));
      }
    } catch (error) {
      if (!(error instanceof NetworkError)) throw error;
      // Offline again: everything stays queued, with the same keys, for the next flush.
    }
    return outcomes;
  }

  async sendBatch() {
    const state = this.load();
    if (!state.inflight) {
      // A batch names each face at most once; a face rated again waits for the next batch.
      const faces = new Set();
      const items = [];
      state.pending = state.pending.filter((item) => {
        if (items.length >= BATCH_LIMIT || faces.has(item.face_id)) return true;
        faces.add(item.face_id);
        items.push(item);
        return false;
      });
      state.inflight = { key: newKey(), items };
      this.save(state);
    }
    const { key, items } = state.inflight;
    try {
      const result = await this.api.call("rateBatch", {
        json: { items },
        headers: { "Idempotency-Key": key },
      });
      this.settle();
      return result.items.map((item) => item.status);
    } catch (error) {
      if (error instanceof ApiError && error.status >= 400 && error.status < 500 && error.status !== 401 && error.status !== 429) {
        this.settle();
        return items.map(() => `rejected: ${error.message}`);
      }
      throw error;
    }
  }

  settle() {
    const state = this.load();
    state.inflight = null;
    this.save(state);
  }
}
