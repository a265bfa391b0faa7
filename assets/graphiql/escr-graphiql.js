// The gateway's GraphiQL page (served with the pinned assets beside it; no network).
// The schema is fetched again whenever the Headers pane changes to valid JSON, so it
// loads as soon as a token is pasted (GraphiQL fetches it again when its fetcher
// changes).
(function () {
  var url = '/graphql';
  var example = JSON.parse(document.getElementById('example-query').textContent);
  var headersTemplate = JSON.parse(document.getElementById('example-headers').textContent);
  if (!localStorage.getItem('graphiql:query')) {
    localStorage.setItem('graphiql:query', example);
  }
  var lastHeaders = null;

  function App() {
    var state = React.useState(function () {
      return GraphiQL.createFetcher({ url: url });
    });
    var fetcher = state[0];
    var setFetcher = state[1];
    var timer = React.useRef(null);
    var onEditHeaders = React.useCallback(function (headers) {
      clearTimeout(timer.current);
      timer.current = setTimeout(function () {
        try {
          JSON.parse(headers || '{}');
        } catch (e) {
          return;
        }
        if (headers === lastHeaders) return;
        lastHeaders = headers;
        setFetcher(function () {
          return GraphiQL.createFetcher({ url: url });
        });
      }, 300);
    }, []);
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      onEditHeaders: onEditHeaders,
      defaultHeaders: headersTemplate,
      defaultEditorToolsVisibility: 'headers',
      shouldPersistHeaders: false,
    });
  }

  ReactDOM.createRoot(document.getElementById('graphiql')).render(React.createElement(App));
})();
