/**
 * The live dashboard. Query parameters: observer=<base URL> (default: this page's origin),
 * cap=<events kept> (default 50000).
 */
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { Live } from './live';
import './styles.css';

const q = new URLSearchParams(window.location.search);
const live = new Live({
  observer: (q.get('observer') ?? '').replace(/\/$/, ''),
  cap: Number(q.get('cap')) > 0 ? Number(q.get('cap')) : 50_000,
  violationsEveryMs: 2000,
});
live.start();
window.addEventListener('pagehide', () => live.stop());

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App live={live} />
  </StrictMode>,
);
