import './base.css';
import './charts.css';
import './widgets.css';
