import { LabIcon } from '@jupyterlab/ui-components';

// A chip with a play mark: jobs running on accelerators. `jp-icon3` lets the theme
// recolour it for light and dark.
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M9 1h2v3H9zm4 0h2v3h-2zM9 20h2v3H9zm4 0h2v3h-2zM1 9h3v2H1zm0 4h3v2H1zm19-4h3v2h-3zm0 4h3v2h-3z"/>
    <path fill-rule="evenodd" d="M6 4h12a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm0 2v12h12V6z"/>
    <path d="M10 8.5v7l6-3.5z"/>
  </g>
</svg>`;

export const trainorchIcon = new LabIcon({ name: 'jupyter-trainorch:jobs', svgstr: svg });
